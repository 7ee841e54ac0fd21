"""Detections of a batch of photos: one model call, and the loop over a loader.

Output contract, used by every ``detect`` of :mod:`digitdet.read`: per image ``(boxes xyxy
float32 (N, 4) in pixels of the original image, labels int64 (N,) category ids 1..10, scores
float32 (N,))``.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch
from tqdm import tqdm


def autocast(device: torch.device, amp: bool):
    # fp16 autocast on CUDA only; CPU trains in fp32 (bf16 autocast on CPU is slower here).
    return torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda" else nullcontext()


@torch.inference_mode()
def predict_batches(model, loader, device, progress: bool = True, desc: str = "predict", detect=None) -> dict:
    """Run the model over ``loader`` of (images, targets-with-image_id) batches.

    ``detect(images) -> [(boxes, labels, scores), ...]`` replaces the plain model call (test-time
    augmentation passes its own). Returns ``{"detections": {image_id: (boxes xyxy float32 (N, 4)
    in pixels of the original image, labels int64 (N,) category ids 1..10, scores float32
    (N,))}, "errors": {image_id: message} for images that could not be read, "images_per_s"}``.
    """
    model.eval()
    detect = detect or plain_detector(model, device)
    dets, errors, n, t0 = {}, {}, 0, time.perf_counter()
    for images, targets in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        ok = [i for i, im in enumerate(images) if im is not None]
        for i, t in enumerate(targets):
            if images[i] is None:
                errors[t["image_id"]] = t.get("error", "unreadable image")
        if not ok:
            continue
        for i, d in zip(ok, detect([images[i] for i in ok])):
            if "scale" in targets[i]:  # a huge photo read reduced: boxes back to its own pixels
                sx, sy = targets[i]["scale"]
                d = ((d[0] * np.array([sx, sy, sx, sy])).astype(d[0].dtype), *d[1:])
            dets[int(targets[i]["image_id"])] = d
        n += len(ok)
    return {"detections": dets, "errors": errors, "images_per_s": n / max(time.perf_counter() - t0, 1e-9)}


def plain_detector(model, device):
    """``detect(images)``: one plain model call per batch (:func:`model_detections`)."""
    return lambda images: model_detections(model, images, device)


def model_detections(model, images: list, device) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One model call on a list of (3, H, W) images -> per image (boxes xyxy, labels, scores) in numpy."""
    with autocast(device, device.type == "cuda"):
        outs = model([im.to(device, non_blocking=True) for im in images])
    return [(o["boxes"].float().cpu().numpy(), o["labels"].cpu().numpy(), o["scores"].float().cpu().numpy())
            for o in outs]
