"""The ONNX Runtime backend: a model written by ``digitdet export`` read with numpy, Pillow and onnxruntime only.

No torch here: ``import torch`` alone takes seconds and most of a GB, so reading a photo this way
starts in a fraction of that (the graph and how it is written: :mod:`digitdet.read.export`).

A graph of this format takes the input scale with each image (``min_size``, ``max_size``), so
zoom-in reading's second look and scan (:mod:`digitdet.read.zoom`) read what the torch path
reads. Graphs of format 1 (the scale frozen at export) still load; they read at their one scale.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from digitdet.config import Config

METADATA_CONFIG = "digitdet_config"
METADATA_DECODER = "digitdet_decoder"
METADATA_FORMAT = "digitdet_onnx_format"
METADATA_SOURCE = "digitdet_source_sha256"  # sha256 of the checkpoint the weights were exported from
FORMAT_VERSION = "2"  # 2: min_size and max_size are graph inputs; 1: image only, the scale frozen
# Config keys read after the model has run, or by the reading around it (the model never reads
# them: digitdet/models has no cfg.decode_*, cfg.pred_* or cfg.zoom_*): free to override.
POST_MODEL_PREFIXES = ("decode_", "pred_", "zoom_")
POST_MODEL_KEYS = ("workers",)
# ... and, for a graph whose scale is an input, the input scale itself.
SCALE_KEYS = ("min_size", "max_size")
# The bundled model as an ONNX graph, exported from digitdet_synth.pt (tools/bundle_model.py writes
# both; a test checks that this one is that one's): the default backend reads it without torch.
BUNDLED_ONNX = Path(__file__).resolve().parents[1] / "assets" / "digitdet_synth.onnx"
BACKENDS = ("auto", "torch", "onnxruntime")
# Relative nudge of the resize factor, as digitdet.models.transform.SIZE_NUDGE (kept in step by a test).
SIZE_NUDGE = 1.0 + 1e-6


def require(name: str):
    """Import an optional dependency of the `onnx` extra, or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ValueError(f"{name} is not installed; reading ONNX graphs needs onnxruntime (a dependency of "
                         f"digitdet), writing them `digitdet export`'s extra: pip install 'digitdet[onnx]'") from None


def choose_backend(backend: str, weights, device: str = "auto") -> str:
    """"torch" or "onnxruntime" for ``--backend`` (auto, torch, onnxruntime), ``--weights`` and ``--device``.

    auto: onnxruntime for a .onnx file, and for the bundled model on the CPU (``--device cpu``,
    or ``auto`` on a machine without an NVIDIA GPU: its device files are looked for, since asking
    torch would import it) when onnxruntime is installed: it starts in a fraction of torch's time
    and memory and reads the same numbers. torch for a checkpoint (.pt) and for a GPU.
    """
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
    onnx_file = str(weights or "").endswith(".onnx")
    if backend == "torch" and onnx_file:
        raise ValueError(f"{weights}: an ONNX model is read with --backend onnxruntime (or auto), not torch")
    if backend == "onnxruntime" and weights and not onnx_file:
        raise ValueError(f"{weights}: --backend onnxruntime reads a .onnx file; write one with "
                         f"`digitdet export --weights {weights} --out model.onnx`")
    if backend != "auto":
        return backend
    if onnx_file:
        return "onnxruntime"
    on_cpu = device == "cpu" or (device == "auto" and not nvidia_gpu())
    if weights is None and on_cpu and BUNDLED_ONNX.is_file() and _installed("onnxruntime"):
        return "onnxruntime"
    return "torch"


def nvidia_gpu() -> bool:
    """True when this machine shows an NVIDIA GPU driver (torch's CUDA would find a GPU), without importing torch."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def default_threads() -> int:
    """Intra-op threads: the cores this process may run on (a container's or taskset's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class OnnxDetector:
    """An ONNX Runtime session that reads photos as the torch detector does.

    ``detector(images)`` takes a list of (3, H, W) float32 arrays in [0, 1] (numpy, or anything
    ``np.asarray`` takes, such as CPU torch tensors) and returns per image ``(boxes xyxy
    float32 (N, 4) in pixels of that image, labels int64 (N,) 1..10, scores float32 (N,))``:
    the ``detect`` contract of :mod:`digitdet.read.detect`. ``detector.at(factor)`` is the same
    at ``factor`` x the input scale. Images run one a call (see :mod:`digitdet.read.export`),
    each on ``threads`` intra-op threads; :meth:`parallel` is the same detector for reading
    ``threads`` photos at once, one thread each (:mod:`digitdet.read.stream`). ``min_size`` and
    ``max_size``: the input scale (:func:`load_onnx_detector` sets the model's).
    """

    def __init__(self, path, threads: int = 0, min_size: int | None = None, max_size: int | None = None):
        self.path = Path(path)
        self.threads = threads or default_threads()
        self.session = self._session(self.threads)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.scalable = [i.name for i in self.session.get_inputs()] == ["image", "min_size", "max_size"]
        self.min_size, self.max_size = min_size, max_size
        self._parallel = None

    def _session(self, intra: int):
        """An ONNX Runtime session of the graph whose calls each run on ``intra`` threads."""
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra
        opts.inter_op_num_threads = 1  # inter-op threads would only add contention on a few cores
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No memory pattern: ONNX Runtime keeps one per input shape it has seen, and every photo has
        # its own; without them 2,000 photos peaked at 154 MB against 129 MB for 20 (with: 163 / 125).
        opts.enable_mem_pattern = False
        # Idle threads sleep instead of spinning: a busy machine (or a second process) is not slowed.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
            raise ValueError(f"{self.path}: onnxruntime cannot load it ({str(e).strip()[:200]}); "
                             f"give a .onnx written by `digitdet export`, or --backend torch for a .pt") from None

    def parallel(self) -> "OnnxDetector":
        """This detector for reading several photos at once, ``threads`` of them, each call on one
        thread (a session of its own, made on first use): on 2 cores the bundled graph read 160
        photos/s model-only so, against 118 one at a time on 2 threads, and beside other work
        115 against 67. Itself when ``threads`` is 1."""
        if self.threads == 1:
            return self
        if self._parallel is None:
            twin = copy.copy(self)
            twin.session = self._session(1)
            twin._parallel = twin
            self._parallel = twin
        return self._parallel

    def eval(self) -> "OnnxDetector":
        """No-op, for code written against ``nn.Module`` (the graph is always in eval mode)."""
        return self

    def __call__(self, images: list) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return self.at(1.0)(images)

    def at(self, factor: float):
        """``detect(images)`` at ``factor`` x the input scale (a format-1 graph: only 1)."""
        feeds = {}
        if self.scalable:
            size = np.float32(round(self.min_size * factor) * SIZE_NUDGE)
            cap = np.float32(round(self.max_size * factor) * SIZE_NUDGE)
            feeds = {"min_size": np.asarray(size), "max_size": np.asarray(cap)}
        elif factor != 1.0:
            raise ValueError(f"{self.path}: this graph's input scale is frozen (written by an older `digitdet "
                             f"export`); export it again to read at another scale")

        def detect(images: list) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            outs = []
            for image in images:
                boxes, labels, scores = self.session.run(None, {"image": np.asarray(image, np.float32), **feeds})
                outs.append((boxes.astype(np.float32), labels.astype(np.int64), scores.astype(np.float32)))
            return outs
        return detect


def load_onnx_detector(path, threads: int = 0, overrides: list[str] | None = None):
    """(OnnxDetector, Config, decoder dict) from a file written by ``digitdet export`` (None: the bundled model).

    Mirrors :func:`digitdet.read.detector.load_detector` (the input scale ``digitdet tune``
    stored is the one read at). ``overrides`` may only change the reading settings (``decode_*``,
    ``pred_*``, ``zoom_*``, ``workers``; and the
    input scale, where the graph takes it); anything else is baked into the graph and
    raises ValueError.
    """
    path = Path(path) if path else BUNDLED_ONNX
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} not found; write one with `digitdet export --weights W.pt`")
    detector = OnnxDetector(path, threads)
    meta = detector.metadata
    if METADATA_CONFIG not in meta:
        raise ValueError(f"{path}: no {METADATA_CONFIG} in the ONNX metadata; "
                         f"only models written by `digitdet export` can be used")
    cfg = Config.from_dict(json.loads(meta[METADATA_CONFIG]), source=f"{path} metadata", saved=True)
    decoder = json.loads(meta.get(METADATA_DECODER) or "{}")
    cfg.apply_decoder(decoder)
    if detector.scalable and "min_size" in decoder:  # a tuned input scale, as load_detector reads it
        cfg.min_size, cfg.max_size = int(decoder["min_size"]), int(decoder["max_size"])
    new = cfg.override(overrides or [])
    free = POST_MODEL_KEYS + (SCALE_KEYS if detector.scalable else ())
    frozen = sorted(k for k, v in new.to_dict().items()
                    if k not in free and not k.startswith(POST_MODEL_PREFIXES) and v != getattr(cfg, k))
    if frozen:
        raise ValueError(f"{frozen} are part of the exported ONNX graph ({path}); re-export with them, "
                         f"e.g. `digitdet export --weights W.pt --out {path.name} {frozen[0]}=...`; only "
                         f"{', '.join(p + '*' for p in POST_MODEL_PREFIXES)}, {', '.join(free)} can be changed "
                         f"at prediction time")
    detector.min_size, detector.max_size = new.min_size, new.max_size
    return detector, new, decoder
