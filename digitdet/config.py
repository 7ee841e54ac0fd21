"""Typed, flat configuration: one dataclass, YAML files, ``key=value`` overrides.

The resolved config is printed at the start of every run and stored in every
checkpoint and results file (``Config.to_dict()``), so any number can be traced to
the settings that made it. Each field's comment says what it does and why the
default suits house-number digits.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# The loss terms of torchvision's Faster R-CNN, in the order logs and metrics.csv list them.
LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class Config:
    # ---- model --------------------------------------------------------------------
    # resnet18_fpn | resnet34_fpn | resnet50_fpn | resnet50_fpn_v2 | resnet101_fpn | mobilenet_v3_fpn
    backbone: str = "resnet18_fpn"
    # none (random init, the default here: no downloads) | torchvision (ImageNet/COCO weights,
    # needs internet) | bundled (the detector shipped with the package, trained on the renderer's
    # pictures: fine-tune it on real data) | path/to/weights.pth (a backbone's or a whole detector's)
    pretrained: str = "none"
    # Normalisation layers of the backbone: "bn" (trainable BatchNorm, right from scratch),
    # "gn" (GroupNorm, batch-size independent), "frozen_bn" (torchvision's choice with weights).
    norm: str = "bn"
    # From-scratch runs first pre-train the backbone as a digit classifier on crops of the
    # training boxes for this many epochs (digitdet/train/pretrain.py; minutes on a CPU, and it
    # multiplies early mAP several times); 0 = off. Only when pretrained == "none".
    pretrain_epochs: int = 0
    pretrain_max_images: int = 0  # crops from the first N training images only (0 = all)
    # Backbone stages that train (0-5: layer4..layer1, conv1); only with pretrained weights,
    # which include the backbone pre-trained by pretrain_epochs (the recipes train all: freezing
    # conv1 + layer1 after pre-training ended the 60-minute benchmark worse, docs/results.md).
    trainable_layers: int = 5
    # Which ResNet stages (1-4) feed the FPN; stage k has stride 2**(k+1). torchvision's RoI
    # pooler takes every box under 112 px from the finest map, so its stride decides how many
    # cells a digit spans: stages 1-2 (strides 4, 8) read far better than 2-3 in the recipes
    # (docs/results.md "One pass, one change"); stages after the last one listed are not run.
    returned_layers: list = field(default_factory=lambda: [2, 3, 4])
    fpn_channels: int = 128  # FPN width; 256 in torchvision, 128 halves head cost
    fpn_extra_pool: bool = False  # add torchvision's max-pooled extra level (needs one more anchor level)
    # Input scale: torchvision resizes so the short side is min_size (max_size caps the long side).
    # SVHN photos are 20-300 px; 800 (torchvision's default) blows them up 10x for nothing.
    min_size: int = 96
    max_size: int = 320
    # Multi-scale training: each training batch is resized to one of these factors x
    # (min_size, max_size), drawn at random ([] = min_size only). Inference keeps min_size.
    train_scales: list = field(default_factory=list)
    # One tuple of anchor sizes (px, at model input scale) per FPN level, smallest level first;
    # a "pool" level is added by torchvision for the last entry when len(anchor_sizes) > levels.
    anchor_sizes: list = field(default_factory=lambda: [[16, 24], [32, 48], [64, 96]])
    # Anchor aspect ratios in torchvision's convention: ratio = HEIGHT / WIDTH.
    # Digits are 1-4x taller than wide (real SVHN h/w median 1.8), so ratios >= 1.
    aspect_ratios: list = field(default_factory=lambda: [1.0, 2.0, 3.0])
    rpn_pre_nms_top_n_train: int = 500
    rpn_post_nms_top_n_train: int = 200
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 50  # an image has 1-5 digits: 50 proposals is plenty
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 128
    box_batch_size_per_image: int = 64  # sampled RoIs per image in training (torchvision: 512)
    box_positive_fraction: float = 0.25
    # A sampled RoI is a digit when its IoU with one is >= box_fg_iou_thresh, background when
    # < box_bg_iou_thresh (torchvision: 0.5 / 0.5; in between: not sampled).
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_score_thresh: float = 0.01  # keep low scores: COCO mAP rewards recall
    box_nms_thresh: float = 0.5  # per-class NMS inside the model
    box_detections_per_img: int = 30
    # Inference only: each detection's box is pooled again and regressed once more from itself,
    # this many times (0 = torchvision's single regression from the proposal; docs/results.md "Box refinement").
    box_refine: int = 0
    representation_size: int = 256  # width of the two-layer box head (torchvision: 1024)
    # RoIAlign samples per 7x7 bin side (torchvision: 2). A digit RoI covers only a few cells of a
    # stride-8 map, so 1 loses little, and it halves RoIAlign's backward: the single biggest op of a
    # CPU training step at digit scale (torch.profiler; docs/results.md "Speed").
    roi_sampling_ratio: int = 2
    # Learn letters beside the number ("25D": the image entry's "letter_boxes", which the
    # synthetic renderer writes) as a class of their own, which the model drops from its
    # output: without it a D is read as a 0. Needs data with letter boxes to help.
    letter_class: bool = False
    # Feature maps and conv weights in channels-last (NHWC) memory: on a CPU the training RoI
    # pooling reads the maps as rows of channels without a copy, and oneDNN's convolutions skip
    # their layout reorders (1.00-1.23x training images/s in probes, 1.12-1.26x reading; the
    # 60-minute benchmark took as many steps as before: docs/results.md "Speed"). Numerics are unchanged
    # up to float rounding; checkpoints load into either layout.
    channels_last: bool = True
    # The padded batch's sides are rounded up to a multiple of this (torchvision's 32 suits
    # backbones down to stride 32, and stays the fallback, so checkpoints without the key read
    # as they were trained). The default recipe's deepest map has stride 8, and 8 there cut
    # padding (aspect-sorted batches at 64 px: 78% photo at 32, 87% at 8): 1.06-1.08x training
    # images/s on one thread (docs/results.md "Speed"); the bundle read equally either way.
    size_divisible: int = 32
    box_loss: str = "smooth_l1"  # smooth_l1 | giou (the seeds' ablation)
    smooth_l1_beta: float = 1.0 / 9  # torchvision's value
    # ---- data / augmentation -------------------------------------------------------------
    augment: str = "digits"  # none | light | digits (see data/transforms.py); never flips
    # Probability of first cropping a training photo around its digits (0.4-1.2 digit heights
    # per side), the view zoom-in reading gives the model (data/transforms.CropAroundDigits).
    crop_digits_p: float = 0.0
    workers: int = 2  # DataLoader worker processes
    # Training batches cut from pools of group_batches x batch_size samples sorted by aspect ratio,
    # so a batch pads its images little (1 = random batches, as torchvision's plain loader; the
    # seeds' setup). Random batches of digit photos were 56% padding, pools of 8 batches 22%:
    # 1.1-1.7x training images/s on a CPU, 1.8x the steps in the 60-minute benchmark (docs/results.md "Speed").
    group_batches: int = 8
    # ---- optimisation --------------------------------------------------------------------
    epochs: int = 12
    batch_size: int = 16
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # cosine | step | onecycle (all after a linear warm-up)
    warmup_iters: int = 200
    warmup_factor: float = 0.001
    lr_steps: list = field(default_factory=lambda: [8, 11])  # epochs, for scheduler=step
    lr_gamma: float = 0.1
    grad_accum: int = 1  # optimizer step every N batches (effective batch = batch_size * N)
    clip_grad: float = 10.0  # max gradient norm; 0 disables
    # Weight of each loss term in the sum that is minimised, e.g. {loss_classifier: 2.0}; terms not
    # named weigh 1. Terms: LOSS_NAMES (box head: classifier, box_reg; RPN: objectness, rpn_box_reg).
    loss_weights: dict = field(default_factory=dict)
    # Exponential moving average of the weights (0 = off): validation, best.pt and predictions use
    # the average, whose decay ramps up as min(ema_decay, (1 + n) / (10 + n)) after n steps. Off by
    # default: with a cosine schedule that ends at lr 0 it gained nothing here (valid mAP 0.408 vs
    # 0.407, one 15-minute pass); it helps runs stopped early (time_budget_min) or step schedules.
    ema_decay: float = 0.0
    # ---- distributed (torchrun) ----------------------------------------------------------
    # Effective batch = batch_size x world_size x grad_accum (batch_size is per process).
    # lr_scale: none (the default: lr is used as written, so config.yaml shows the lr that ran;
    # scale it yourself, as torchvision's references and detectron2 do) | linear (lr x
    # world_size, Goyal et al. 2017: keeps lr per image when processes are added).
    lr_scale: str = "none"
    sync_bn: bool = False  # SyncBatchNorm across GPUs (norm=bn, few images per GPU); CUDA only
    amp: bool = True  # mixed precision; used on CUDA only, CPU always trains in fp32
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower)
    # ---- evaluation / checkpoints ----------------------------------------------------------
    save_every_steps: int = 200  # also write last.pt every N optimizer steps (a kill loses < N steps)
    eval_every: int = 1  # epochs between validation runs; 0 = only at the end
    best_metric: str = "map"  # map | accuracy: what best.pt tracks
    early_stop_patience: int = 0  # evaluations without improvement before stopping; 0 = off
    max_train_images: int = 0  # use only the first N training images (0 = all): quick runs
    max_valid_images: int = 0
    # Train for at most this many minutes (0 = no limit). The lr schedule is planned to end in the
    # budget: after 20 optimizer steps, and again after each epoch, the measured time per step sets
    # how many steps the schedule has (at most `epochs` worth), so a 60-minute run anneals to lr 0
    # at ~58 minutes instead of being cut mid-schedule. The plan depends on the machine's speed, so
    # two budgeted runs may differ; for bit-reproducible runs set epochs and leave this at 0.
    time_budget_min: float = 0.0
    # ---- prediction / decoding -------------------------------------------------------------
    pred_score_thresh: float = 0.05  # detections kept in pred.json (low: mAP rewards recall)
    pred_max_per_image: int = 30
    # pred.json's boxes grow by this fraction of their height on every side (pred.csv is read
    # from the unpadded ones). The renderer's boxes are tight around the ink, real SVHN's are
    # about 0.06-0.08 of the height loose a side, and a tight box scores IoU ~0.7 against such a
    # box, below most of mAP's thresholds. `evaluate --tune-decoder` chooses it on the split it
    # tunes on and stores it with the weights (0 on the renderer's pictures).
    pred_box_pad: float = 0.0
    # pred.json's boxes of one photo take one height, the median of the digits read (real SVHN's
    # annotators drew them so in all but 4 of its 10,585 test photos with 2+ digits); tuned with
    # the pad (off on the renderer's pictures).
    pred_box_same_height: bool = False
    decode_score_thresh: float = 0.5  # digits kept when reading the number (tunable)
    decode_iou_thresh: float = 0.5  # class-agnostic duplicate suppression when reading
    # Line reading (digitdet/read/decode.py): boxes scoring >= this also join the digits read when
    # they sit beside one on its line; 0 = off. Tuned with decode_score_thresh (--tune-decoder).
    decode_line_thresh: float = 0.0
    # ... and when no digit reaches decode_score_thresh, line reading starts the line from the
    # best box over decode_line_thresh (every SVHN crop holds a number) only in photos whose
    # short side is under this many input scales (min_size); a larger photo, a phone's picture
    # of a house front, need not hold one: there the rule read a number into 36% of photos
    # without one (bench/large_photos.py). 0 = in every photo.
    decode_line_start_below: float = 4.0
    # Zoom-in reading (digitdet/read/zoom.py): photos whose digits are small (median height under
    # zoom_below x the short side; pass 1's digits scoring >= zoom_score) are read again on a crop
    # reaching zoom_margin digit heights beyond them. +2.9 to +5.0 points of test accuracy for the
    # bundled model on five synthetic sets at ~1.5x the reading time (docs/results.md, "Zoom-in reading").
    zoom_read: bool = True
    zoom_score: float = 0.3
    zoom_below: float = 0.45
    zoom_margin: float = 0.75
    # Second look (torch backend): photos where pass 1 finds no digit scoring >= zoom_score are
    # read again whole at this many times the input scale, and the more confident look is kept;
    # 0 = off. +0.0 to +0.6 points of accuracy and +0.1 to +0.5 of mAP for the bundle on seven
    # synthetic sets (docs/results.md "Zoom-in reading"). An exported ONNX graph's input scale is frozen,
    # so that backend skips it.
    zoom_empty_scale: float = 2.0
    # Scan (torch backend): a photo whose short side holds 4+ input scales and where no digit
    # reaches decode_score_thresh is read whole at twice zoom_empty_scale, then twice that, up
    # to this many times the input scale (while its short side holds that many input scales; so
    # never on SVHN-sized photos), the more confident look kept and read again on a crop around
    # its digits: the number in a phone's photo of a house front, a few percent of its height
    # (bench/large_photos.py). 0 = off.
    zoom_scan: float = 8.0
    # ... and a scan's look counts only when its best digit scores this much: on photos without a
    # number the best of a 4-8x look stayed under ~0.95, with one it was over 0.98 nine times in ten.
    zoom_scan_score: float = 0.98
    eval_batch_size: int = 32

    # ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        """Build from a dict; unknown keys are an error naming ``source``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown config key(s) {unknown}; known keys: {sorted(known)}")
        cfg = cls()
        for k, v in d.items():
            setattr(cfg, k, _coerce(k, v, getattr(cfg, k), source))
        return cfg

    def override(self, pairs: list[str]) -> "Config":
        """Apply ``key=value`` strings (values parsed as YAML: 0.01, true, [16, 32])."""
        d = self.to_dict()
        for p in pairs:
            if "=" not in p:
                raise ValueError(f"override {p!r} is not of the form key=value")
            k, v = p.split("=", 1)
            d[k.strip()] = yaml.safe_load(v)
        return Config.from_dict(d, source="command-line override")

    def decoder(self) -> dict:
        """The number-reading settings as a checkpoint's ``"decoder"`` dict stores them, and
        ``line_start_side``: the short side in px from which a photo is read without line
        reading's start rule (``decode_line_start_below`` x ``min_size``; 0 = none; not tuned,
        so :meth:`apply_decoder` ignores it)."""
        return {**{key: getattr(self, name) for key, name in DECODER_FIELDS.items()},
                "line_start_side": round(self.decode_line_start_below * self.min_size)}

    def apply_decoder(self, decoder: dict | None) -> "Config":
        """Take the reading settings of a checkpoint's ``"decoder"`` dict (keys it lacks, e.g.
        ``line_thresh`` in files older than line reading, keep this config's); returns self."""
        for key, name in DECODER_FIELDS.items():
            if decoder and key in decoder:
                setattr(self, name, type(getattr(self, name))(decoder[key]))  # float, or bool
        return self

    def dumps(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# checkpoint "decoder" key -> Config field
DECODER_FIELDS = {"score_thresh": "decode_score_thresh", "iou_thresh": "decode_iou_thresh",
                  "line_thresh": "decode_line_thresh", "box_pad": "pred_box_pad",
                  "box_same_height": "pred_box_same_height"}


def _coerce(key: str, value, default, source: str):
    """Check a value's type against the default's, converting int -> float where harmless."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{source}: {key} must be true/false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, list) and isinstance(value, (list, tuple)):
        return json.loads(json.dumps(list(value)))
    if key == "loss_weights" and isinstance(value, dict):
        bad = sorted(str(k) for k in value if k not in LOSS_NAMES)
        if bad:
            raise ValueError(f"{source}: loss_weights has unknown term(s) {bad}; terms: {list(LOSS_NAMES)}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value.values()):
            raise ValueError(f"{source}: loss_weights must map terms to numbers >= 0, got {value!r}")
        return {k: float(v) for k, v in value.items()}
    raise ValueError(f"{source}: {key} must be {type(default).__name__}, got {value!r}")


def named_config_path(name: str) -> Path:
    """``default`` -> the packaged ``configs/default.yaml``; a path is returned as is."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    packaged = CONFIG_DIR / f"{name}.yaml"
    if packaged.exists():
        return packaged
    names = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {name!r}: no such file, and not a packaged recipe (one of {names})")


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a named recipe or a YAML file (default: ``default``) and apply overrides."""
    path = named_config_path(name_or_path or "default")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    cfg = Config.from_dict(data, source=str(path))
    return cfg.override(overrides or [])
