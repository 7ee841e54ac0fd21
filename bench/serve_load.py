"""A bounded load check of `digitdet serve` on loopback: requests/s, p50/p99 latency, errors, server RSS.

    python bench/serve_load.py                          # 500 requests, 8 at a time, the bundled model
    python bench/serve_load.py --requests 200 --concurrency 4 --photos DIR

Starts `digitdet serve` on a free 127.0.0.1 port (only loopback is ever targeted), sends the photos
of DIR (default: the real SVHN dev photos, else the renderer's) round-robin, then stops it. Server
RSS is read from /proc before the first request and after the last: it must not grow without bound.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from digitdet.serve.app import free_port, wait_until_up

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "svhn_real_dev" / "valid"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--photos", default=str(REAL), help="folder of photos to send (default: the real dev photos)")
    p.add_argument("--threads", type=int, default=0, help="the server's torch threads")
    args = p.parse_args(argv)
    photos = sorted(q for q in Path(args.photos).glob("*") if q.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not photos:
        print(f"bench/serve_load.py: no photos in {args.photos}; pass --photos DIR")
        return 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "digitdet", "serve", "--port", str(port),
                               "--threads", str(args.threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(url, 120)
        bodies = [q.read_bytes() for q in photos]
        httpx.post(f"{url}/v1/read", content=bodies[0], timeout=60)  # warm-up
        rss_before = rss_mb(server.pid)

        def one(k):
            t0 = time.perf_counter()
            try:
                r = httpx.post(f"{url}/v1/read", content=bodies[k % len(bodies)], timeout=120)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            return time.perf_counter() - t0, ok

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - t0
        rss_after = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    lat = np.array([r[0] for r in results]) * 1000
    out = {"requests": args.requests, "concurrency": args.concurrency, "requests_per_s": round(args.requests / wall, 1),
           "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
           "errors": sum(not ok for _, ok in results), "server_rss_mb_before": round(rss_before),
           "server_rss_mb_after": round(rss_after), "photos": str(args.photos)}
    print(f"{out['requests']} requests, {out['concurrency']} at a time: {out['requests_per_s']} requests/s, "
          f"p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, {out['errors']} errors; server RSS "
          f"{out['server_rss_mb_before']} -> {out['server_rss_mb_after']} MB")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
