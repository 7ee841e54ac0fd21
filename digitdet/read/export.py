"""ONNX export of the whole detector, its input scale a graph input (the reading side: :mod:`digitdet.read.onnx`).

The exported graph is torchvision's Faster R-CNN end to end (normalise + resize, backbone,
RPN, RoI heads, per-class NMS, boxes scaled back to the input image):

* inputs ``image``: float32 (3, H, W), RGB in [0, 1], any H and W (dynamic axes), ONE image
  per call (torchvision's detector loops over the images of a batch in Python, so a traced
  graph would fix the batch size to the one it was traced with); ``min_size`` and
  ``max_size``: float32 scalars, the short side the photo is resized to and the cap on its
  long side, as :class:`digitdet.models.transform.DigitTransform` computes them (already
  nudged by ``SIZE_NUDGE``). With the scale an input, zoom-in reading's second look and scan
  (:mod:`digitdet.read.zoom`) run on the same graph as the first look.
* outputs ``boxes`` float32 (N, 4) xyxy in pixels of the input image, ``labels`` int64 (N,)
  category ids 1..10, ``scores`` float32 (N,), best first; N <= box_detections_per_img.

The checkpoint's config and tuned decoder travel in the model's ``metadata_props``
(``digitdet_config``, ``digitdet_decoder``: JSON), so the ONNX Runtime backend rebuilds
everything from the .onnx file alone, like ``load_detector`` does from a .pt.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection.image_list import ImageList

from digitdet.config import Config
from digitdet.io import atomic_write_bytes
from digitdet.models.transform import SIZE_NUDGE
from digitdet.read.onnx import (FORMAT_VERSION, METADATA_CONFIG, METADATA_DECODER, METADATA_FORMAT, METADATA_SOURCE,
                                require)

# Torchvision's detection ops need opset >= 11; 17 is well supported by onnxruntime 1.2x+.
DEFAULT_OPSET = 17


class ScaledDetector(torch.nn.Module):
    """A torchvision detector whose input scale comes with each call: ``(image, min_size,
    max_size) -> (boxes, labels, scores)``, the steps of ``GeneralizedRCNN.forward`` in eval
    mode with the transform's resize taking the two sizes as tensors (torchvision's own
    resize reads them from Python attributes, which tracing would freeze)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, min_size: torch.Tensor, max_size: torch.Tensor):
        m, t = self.model, self.model.transform
        original = [(image.shape[-2], image.shape[-1])]
        x = t.normalize(image)
        side = torch._shape_as_tensor(x)[-2:].to(torch.float32)
        scale = torch.min(min_size / side.min(), max_size / side.max())
        x = F.interpolate(x[None], scale_factor=scale if torch.jit.is_tracing() else float(scale), mode="bilinear",
                          recompute_scale_factor=True, align_corners=False)[0]
        sizes = [(x.shape[-2], x.shape[-1])]
        images = ImageList(t.batch_images([x], size_divisible=t.size_divisible), sizes)
        features = m.backbone(images.tensors)
        proposals, _ = m.rpn(images, features)
        detections, _ = m.roi_heads(features, proposals, images.image_sizes)
        d = t.postprocess(detections, images.image_sizes, original)[0]
        return d["boxes"], d["labels"], d["scores"]


def scale_inputs(min_size: int, max_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The graph's ``min_size`` and ``max_size`` inputs for an input scale, nudged as the torch path does."""
    return (torch.tensor(min_size * SIZE_NUDGE, dtype=torch.float32),
            torch.tensor(max_size * SIZE_NUDGE, dtype=torch.float32))


def export_onnx(model: torch.nn.Module, cfg: Config, decoder: dict, out_path, opset: int = DEFAULT_OPSET,
                source: str | Path | None = None) -> Path:
    """Export ``model`` (a digitdet detector, any device) to ``out_path`` with cfg + decoder in metadata.

    ``source``: the checkpoint the weights came from; its sha256 is kept in the metadata
    (``digitdet_source_sha256``) so a shipped .onnx can be checked against its .pt.
    Uses the TorchScript-based exporter (``dynamo=False``): torchvision's detection models
    are written for it (``torchvision._is_tracing()`` branches in the RPN and RoI heads);
    the dynamo exporter does not handle their data-dependent shapes. Returns the path
    written (atomically).
    """
    onnx = require("onnx")
    model = model.to("cpu").eval()
    # Any size works (height and width are dynamic); this one is the shape of a digit photo.
    example = (torch.rand(3, cfg.min_size, cfg.min_size * 5 // 2), *scale_inputs(cfg.min_size, cfg.max_size))
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.export.tmp")
    with warnings.catch_warnings():
        # Tracer warnings about Python scalars in torchvision's code are expected and harmless.
        warnings.simplefilter("ignore")
        # No constant folding: BatchNorm stays a node of its own (ONNX Runtime fuses it into the
        # conv when it loads the model), so the weights stay as the checkpoint has them and
        # those it holds in fp16 are stored in fp16 (half_initializers).
        torch.onnx.export(ScaledDetector(model).eval(), example, str(tmp), opset_version=opset, dynamo=False,
                          do_constant_folding=False,
                          input_names=["image", "min_size", "max_size"], output_names=["boxes", "labels", "scores"],
                          dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "detections"},
                                        "labels": {0: "detections"}, "scores": {0: "detections"}})
    try:
        proto = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    half_initializers(proto)
    meta = {METADATA_CONFIG: json.dumps(cfg.to_dict()), METADATA_DECODER: json.dumps(decoder or {}),
            METADATA_FORMAT: FORMAT_VERSION}
    if source is not None:
        meta[METADATA_SOURCE] = file_sha256(source)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = ("digitdet Faster R-CNN: image float32 (3,H,W) RGB [0,1], min_size, max_size "
                        "-> boxes xyxy px, labels 1..10, scores")
    atomic_write_bytes(out_path, proto.SerializeToString())
    return out_path


def half_initializers(proto, least: int = 1024) -> int:
    """Store each float32 weight of ``proto`` (at least ``least`` values) that fp16 holds exactly
    as fp16, cast back to float32 by a Cast node (folded when ONNX Runtime loads the model):
    the file of a checkpoint saved in fp16 is half the size, its numbers unchanged. Returns
    how many weights were stored so."""
    from onnx import TensorProto, helper, numpy_helper

    graph, casts, kept = proto.graph, [], []
    for init in graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size >= least and np.array_equal(a.astype(np.float16).astype(np.float32), a):
            half = numpy_helper.from_array(a.astype(np.float16), f"{init.name}__fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for node in reversed(casts):
        graph.node.insert(0, node)
    return len(casts)


# Photos of the calibration folder that set the int8 activation ranges (more hardly change them).
CALIBRATION_PHOTOS = 100


def quantize_int8(src, out_path, photos: list[Path], cfg: Config) -> Path:
    """``src`` (a graph from :func:`export_onnx`) with its convolutions in int8: ONNX Runtime's
    static quantization (QDQ, per-channel int8 weights, uint8 activations whose ranges are
    measured on ``photos`` read at the input scale of ``cfg``); the other operators stay fp32.
    The metadata (config, decoder) is kept. Returns the path written (atomically)."""
    require("onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

    from digitdet.data.images import load_rgb
    from digitdet.read.stream import photo_array

    if not photos:
        raise ValueError("int8 quantization needs calibration photos (--calibrate DIR)")
    size, cap = (np.asarray(t.numpy()) for t in scale_inputs(cfg.min_size, cfg.max_size))

    class Photos(CalibrationDataReader):
        def __init__(self):
            self.rest = iter(photos[:CALIBRATION_PHOTOS])

        def get_next(self):
            path = next(self.rest, None)
            return None if path is None else {"image": photo_array(load_rgb(path)), "min_size": size, "max_size": cap}

    out_path = Path(out_path)
    pre, tmp = (out_path.with_name(f".{out_path.name}.{k}.tmp") for k in ("pre", "int8"))
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(tmp), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                        op_types_to_quantize=["Conv"], activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        tmp.replace(out_path)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out_path


def file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
