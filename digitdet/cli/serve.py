"""digitdet serve: the reader over HTTP, with a page to try it (the serve extra: FastAPI + uvicorn)."""
from __future__ import annotations

import os

from digitdet.cli.common import setup


def add_parser(sub, name):
    p = sub.add_parser(name, description="An HTTP service around the reader: POST a photo to /v1/read (multipart field "
                                   "'image', or the raw bytes) for the number and its digits; GET / is a page to try "
                                   "it; GET /health; OpenAPI docs at /docs.",
                       epilog="example: digitdet serve --port 8000   then open http://127.0.0.1:8000/ , or "
                              "curl -F image=@house.jpg http://127.0.0.1:8000/v1/read")
    p.add_argument("--weights", help="checkpoint (.pt) or exported model (.onnx); default: the bundled model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model")
    p.add_argument("--max-mb", type=float, default=20.0, help="largest photo accepted, in MB (default 20)")
    p.add_argument("--max-megapixels", type=float, default=50.0, help="largest photo accepted, in megapixels")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads of each server process (default: the cores this process may use)")
    return p


def run(args) -> int:
    setup(args, torch_threads=False)  # the Reader sets its backend's threads (the bundled model: no torch)
    try:
        import uvicorn  # noqa: F401 - the serve extra
        import fastapi  # noqa: F401
    except ImportError:
        raise ValueError("digitdet serve needs the serve extra: pip install 'digitdet[serve]' "
                         "(fastapi, uvicorn, python-multipart); `make` installs it") from None
    if args.workers < 1 or not 0 < args.max_mb or not 0 < args.max_megapixels:
        raise ValueError("--workers must be >= 1 and --max-mb / --max-megapixels > 0")
    os.environ.update(DIGITDET_SERVE_WEIGHTS=args.weights or "", DIGITDET_SERVE_DEVICE=args.device,
                      DIGITDET_SERVE_THREADS=str(args.threads),
                      DIGITDET_SERVE_MAX_BYTES=str(int(args.max_mb * 2**20)),
                      DIGITDET_SERVE_MAX_PIXELS=str(int(args.max_megapixels * 1e6)))
    from digitdet.serve.app import app_from_env

    if args.workers == 1:  # load the model here: a bad --weights is one line before the port opens
        app = app_from_env()
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    else:
        uvicorn.run("digitdet.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level="info")
    return 0
