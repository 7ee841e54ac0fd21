"""Pre-train the detector's backbone as a digit classifier on crops of the training boxes.

Why: a Faster R-CNN trained from random weights spends most of its first CPU hour learning what
a digit looks like. A classifier on 64x64 crops of the same boxes learns that in minutes, and
its weights initialise the detector's backbone (``pretrained=path.pth``), with no download.

Crops: every ground-truth digit box, enlarged by a random margin and shifted a little (so the
classifier sees context and neighbours like the RoI head will), labelled with its category id;
plus background windows that overlap no digit much, labelled 0. Square 64x64 RGB in [0, 1].
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from digitdet.boxes import iou_xyxy, xywh_to_xyxy
from digitdet.data.coco import load_annotated, load_coco_digits, sample_seed, split_paths
from digitdet.io import save_checkpoint
from digitdet.models.backbones import MOBILENETS, NORM_LAYER, RESNETS

log = logging.getLogger("digitdet")
CROP = 64


class DigitCrops(Dataset):
    """Item i -> (float32 (3, 64, 64) crop, label 0..10); 0 = background, 1..10 = category id.

    One item per ground-truth box plus ``bg_ratio`` background items per box; crop geometry
    is drawn from (seed, epoch, i), so every epoch sees new crops and runs are reproducible.
    """

    def __init__(self, coco: dict, images_dir, seed: int = 0, bg_ratio: float = 0.25, max_images: int = 0):
        images = sorted(coco["images"], key=lambda im: im["id"])[: max_images or None]
        self.images_dir, self.entries = Path(images_dir), {im["id"]: im for im in images}
        boxes: dict[int, list] = {i: [] for i in self.entries}
        for a in coco["annotations"]:
            if a["image_id"] in boxes:
                boxes[a["image_id"]].append((xywh_to_xyxy(a["bbox"])[0], a["category_id"]))
        self.boxes = boxes
        self.items = [(i, k) for i, bs in boxes.items() for k in range(len(bs))]
        n_bg = int(len(self.items) * bg_ratio)
        ids = list(self.entries)
        self.items += [(ids[j % len(ids)], -1) for j in range(n_bg)]
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        rng = np.random.default_rng(sample_seed(self.seed, self.epoch, i))
        image_id, k = self.items[i]
        image = load_annotated(self.images_dir, self.entries[image_id])
        if k >= 0:
            box, label = self.boxes[image_id][k]
            window = _around(box, rng)
        else:
            window, label = _background(image.size, [b for b, _ in self.boxes[image_id]], rng), 0
        # crop() pads windows that leave the image (digits at the edge); resize() would refuse.
        crop = image.crop(tuple(int(round(v)) for v in window)).resize((CROP, CROP), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return x, label


def _around(box: np.ndarray, rng) -> np.ndarray:
    """A square window around a digit box: side 1.1-1.6x the box's longer side, jittered."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * rng.uniform(1.1, 1.6)
    cx = (x1 + x2) / 2 + rng.uniform(-0.1, 0.1) * (x2 - x1)
    cy = (y1 + y2) / 2 + rng.uniform(-0.1, 0.1) * (y2 - y1)
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def _background(size, boxes: list, rng) -> np.ndarray:
    """A square window overlapping no digit by IoU > 0.2 (the last try if none is found)."""
    w, h = size
    for _ in range(10):
        side = rng.uniform(0.3, 1.0) * min(w, h)
        x, y = rng.uniform(0, max(w - side, 1e-3)), rng.uniform(0, max(h - side, 1e-3))
        window = np.array([x, y, x + side, y + side])
        if not boxes or iou_xyxy(window, np.stack(boxes)).max() < 0.2:
            break
    return window


def build_classifier(backbone: str, stages: int = 4) -> nn.Module:
    """The detector backbone's torchvision classifier with 11 outputs (background + 10 digits).

    Its parameter names are the ones ``build_model`` loads into ``backbone.body`` (the
    classification layer is left out there). ``stages`` < 4 (ResNets only) keeps only the
    first residual stages (for the default detector, ``max(returned_layers)`` = 2) and
    classifies from the last one's pooled features: about half the time, but a weaker start
    for the detector than the whole classifier gives (docs/results.md, "Backbone pre-training").
    """
    if backbone in RESNETS:
        if not 1 <= stages <= 4:
            raise ValueError(f"stages={stages}: a ResNet has residual stages 1..4")
        model = RESNETS[backbone][0](weights=None, num_classes=11, norm_layer=NORM_LAYER)
        if stages < 4:
            for i in range(stages + 1, 5):
                setattr(model, f"layer{i}", nn.Identity())
            # each ResNet stage doubles the channels: stage k ends with fc's width / 2**(4 - k)
            model.fc = nn.Linear(model.fc.in_features >> (4 - stages), 11)
        return model
    if backbone in MOBILENETS:
        if stages != 4:
            raise ValueError(f"stages={stages}: only ResNet classifiers can be cut after a stage; "
                             f"{backbone} pre-trains whole (stages=4)")
        return MOBILENETS[backbone][0](weights=None, num_classes=11, norm_layer=NORM_LAYER)
    raise ValueError(f"backbone {backbone!r} cannot be pre-trained here; choose one of {sorted(RESNETS) + sorted(MOBILENETS)}")


def pretrain_backbone(data_root, out_path, backbone: str = "resnet18_fpn", epochs: int = 4,
                      batch_size: int = 128, lr: float = 3e-3, workers: int = 2, seed: int = 0,
                      max_images: int = 0, progress: bool = True, device: str | torch.device = "cpu",
                      stages: int = 4) -> dict:
    """Train the classifier on train-split crops (on ``device``), report valid-split crop accuracy,
    save weights (on CPU, loadable anywhere).

    Writes ``out_path`` (a digitdet checkpoint whose "model" is the classifier's state dict,
    loadable by ``pretrained=out_path``). Returns {"train_loss", "valid_accuracy", "seconds"}.
    """
    torch.manual_seed(seed)
    train_dir, train_ann = split_paths(data_root, "train")
    valid_dir, valid_ann = split_paths(data_root, "valid")
    checking = None if progress else False  # the photos' check: a bar on a terminal, or none
    train = DigitCrops(load_coco_digits(train_ann, train_dir, progress=checking)[0], train_dir, seed, max_images=max_images)
    valid = DigitCrops(load_coco_digits(valid_ann, valid_dir, progress=checking)[0], valid_dir, seed + 1)
    device = torch.device(device)
    model = build_classifier(backbone, stages).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    t0, loss_avg = time.perf_counter(), 0.0
    for epoch in range(epochs):
        train.epoch = epoch
        model.train()
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        loader = DataLoader(train, batch_size, shuffle=True, generator=g, num_workers=workers, drop_last=True)
        for x, y in tqdm(loader, desc=f"pretrain {epoch}", disable=not progress, leave=False):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_avg = 0.9 * loss_avg + 0.1 * loss.item() if loss_avg else loss.item()
        acc = crop_accuracy(model, valid, batch_size, workers)
        log.info("pretrain epoch %d: loss %.4f, valid crop accuracy %.4f", epoch + 1, loss_avg, acc)
    meta = {"backbone": backbone, "norm": "bn", "valid_accuracy": acc, "epochs": epochs, "stages": stages}
    save_checkpoint(out_path, {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "config": meta})
    return {"train_loss": loss_avg, "valid_accuracy": acc, "seconds": time.perf_counter() - t0}


@torch.inference_mode()
def crop_accuracy(model: nn.Module, crops: DigitCrops, batch_size: int = 256, workers: int = 0) -> float:
    model.eval()
    device = next(model.parameters()).device
    hits = n = 0
    for x, y in DataLoader(crops, batch_size, num_workers=workers):
        hits += int((model(x.to(device)).argmax(1).cpu() == y).sum())
        n += len(y)
    return hits / max(n, 1)


def pretrain_for_run(cfg, data_root, out_dir: Path, device: str = "cpu", progress: bool = True) -> str:
    """Pre-train the backbone as a digit classifier (digitdet.train.pretrain) into out_dir/backbone.pt,
    on ``device`` (the training device: a GPU run pre-trains on its GPU), with a progress bar when
    ``progress`` (the run's: none with ``--quiet``) and INFO is logged.

    A finished backbone.pt (from a run killed later in its start) is reused, not redone.
    """
    path = out_dir / "backbone.pt"
    if path.exists():
        log.info("using the pre-trained backbone %s", path)
        return str(path)
    log.info("pre-training the %s backbone as a digit classifier (%d epochs)", cfg.backbone, cfg.pretrain_epochs)
    # Under torchrun rank 0 pre-trains alone while this node's other ranks wait: on a CPU it takes
    # their threads too (2 processes of 1 thread on 2 cores: both cores, not one).
    threads, local_world = torch.get_num_threads(), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(threads * local_world)
    try:
        result = pretrain_backbone(data_root, path, cfg.backbone, epochs=cfg.pretrain_epochs,
                                   workers=cfg.workers, seed=cfg.seed, max_images=cfg.pretrain_max_images,
                                   progress=progress and log.isEnabledFor(logging.INFO), device=device)
    finally:
        torch.set_num_threads(threads)
    log.info("backbone pre-trained in %.0f s: %.3f crop accuracy on valid", result["seconds"], result["valid_accuracy"])
    return str(path)
