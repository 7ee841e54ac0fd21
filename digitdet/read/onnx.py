"""ONNX export of the whole detector and an ONNX Runtime backend that stands in for it.

The exported graph is torchvision's Faster R-CNN end to end (normalise + resize, backbone,
RPN, RoI heads, per-class NMS, boxes scaled back to the input image):

* input ``image``: float32 (3, H, W), RGB in [0, 1], any H and W (dynamic axes), ONE image
  per call: torchvision's detector loops over the images of a batch in Python, so a traced
  graph would fix the batch size to the one it was traced with.
* outputs ``boxes`` float32 (N, 4) xyxy in pixels of the input image, ``labels`` int64 (N,)
  category ids 1..10, ``scores`` float32 (N,), best first; N <= box_detections_per_img.

The checkpoint's config and tuned decoder travel in the model's ``metadata_props``
(``digitdet_config``, ``digitdet_decoder``: JSON), so ``predict --backend onnxruntime``
rebuilds everything from the .onnx file alone, like ``load_detector`` does from a .pt.
Settings used inside the graph (input scale, proposals, box_score_thresh, ...) are frozen
at export; only the post-processing settings in ``POST_MODEL_KEYS`` can still be changed.
"""
from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path

import torch

from digitdet.config import Config
from digitdet.io import atomic_write_bytes

METADATA_CONFIG = "digitdet_config"
METADATA_DECODER = "digitdet_decoder"
METADATA_FORMAT = "digitdet_onnx_format"
FORMAT_VERSION = "1"
# Torchvision's detection ops need opset >= 11; 17 is well supported by onnxruntime 1.2x+.
DEFAULT_OPSET = 17
# Config keys read after the model has run (pred.json / pred.csv writing): free to override.
POST_MODEL_KEYS = ("pred_score_thresh", "decode_score_thresh", "decode_iou_thresh", "decode_line_thresh", "workers",
                   "zoom_read", "zoom_empty_scale")


def export_onnx(model: torch.nn.Module, cfg: Config, decoder: dict, out_path, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``model`` (a digitdet detector, any device) to ``out_path`` with cfg + decoder in metadata.

    Uses the TorchScript-based exporter (``dynamo=False``): torchvision's detection models
    are written for it (``torchvision._is_tracing()`` branches in the transform and the
    RoI heads); the dynamo exporter does not handle their data-dependent shapes. Returns
    the path written (atomically).
    """
    onnx = _require("onnx")
    model = model.to("cpu").eval()
    # Any size works (height and width are dynamic); this one is the shape of a digit photo.
    example = torch.rand(3, cfg.min_size, cfg.min_size * 5 // 2)
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.export.tmp")
    with warnings.catch_warnings():
        # Tracer warnings about Python scalars in torchvision's code are expected and harmless.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, ([example],), str(tmp), opset_version=opset, dynamo=False,
                          input_names=["image"], output_names=["boxes", "labels", "scores"],
                          dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "detections"},
                                        "labels": {0: "detections"}, "scores": {0: "detections"}})
    try:
        proto = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    meta = {METADATA_CONFIG: json.dumps(cfg.to_dict()), METADATA_DECODER: json.dumps(decoder or {}),
            METADATA_FORMAT: FORMAT_VERSION}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "digitdet Faster R-CNN: image float32 (3,H,W) RGB [0,1] -> boxes xyxy px, labels 1..10, scores"
    atomic_write_bytes(out_path, proto.SerializeToString())
    return out_path


def _require(name: str):
    """Import an optional dependency of the `onnx` extra, or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ValueError(f"{name} is not installed; ONNX export and prediction need: "
                         f"pip install 'digitdet[onnx]'") from None


class OnnxDetector:
    """An ONNX Runtime session with the inference interface of the torchvision detector.

    ``detector(images)`` takes a list of float tensors (3, H, W) in [0, 1] and returns one
    dict per image with ``boxes`` (N, 4) xyxy pixels of that image, ``labels`` (N,) 1..10 and
    ``scores`` (N,), as torch tensors; so :func:`digitdet.read.detect.predict_batches` and
    everything downstream run unchanged. Images run one at a time (see module docstring).
    """

    def __init__(self, path, threads: int = 0):
        ort = _require("onnxruntime")
        opts = ort.SessionOptions()
        # One image at a time: intra-op threads parallelise each op; inter-op would only add
        # contention on the few cores this is meant for.
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
            raise ValueError(f"{path}: onnxruntime cannot load it ({str(e).strip()[:200]}); "
                             f"give a .onnx written by `digitdet export`, or --backend torch for a .pt") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def eval(self) -> "OnnxDetector":
        """No-op, for code written against ``nn.Module`` (the graph is always in eval mode)."""
        return self

    def __call__(self, images: list[torch.Tensor]) -> list[dict]:
        outs = []
        for image in images:
            boxes, labels, scores = self.session.run(None, {"image": image.detach().cpu().float().numpy()})
            outs.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                         "scores": torch.from_numpy(scores)})
        return outs


def load_onnx_detector(path, threads: int = 0, overrides: list[str] | None = None):
    """(OnnxDetector, Config, decoder dict) from a file written by :func:`export_onnx`.

    Mirrors :func:`digitdet.read.detector.load_detector`. ``overrides`` may only change
    ``POST_MODEL_KEYS``; anything else is baked into the graph and raises ValueError.
    """
    if not path:
        raise ValueError("--backend onnxruntime needs --weights model.onnx (written by `digitdet export`)")
    path = Path(path)
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
    new = cfg.override(overrides or [])
    frozen = sorted(k for k, v in new.to_dict().items() if k not in POST_MODEL_KEYS and v != getattr(cfg, k))
    if frozen:
        raise ValueError(f"{frozen} are part of the exported ONNX graph ({path}); re-export with them, "
                         f"e.g. `digitdet export --weights W.pt --out {path.name} {frozen[0]}=...`; "
                         f"only {list(POST_MODEL_KEYS)} can be changed at prediction time")
    return detector, new, decoder
