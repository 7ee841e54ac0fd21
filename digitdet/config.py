"""Typed, flat configuration: one dataclass, YAML recipes, ``key=value`` overrides.

The dataclass defaults ARE the default recipe (``configs/default.yaml`` changes nothing); other
recipes list only what they change. The resolved config is printed at the start of every run
and stored in every checkpoint and results file (``Config.to_dict()``), so any number can be
traced to the settings that made it. Each field's comment says what it does; what the defaults
measured is in docs/results.md.
"""
from __future__ import annotations

import dataclasses
import json
import logging
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
    # none (random init: no downloads) | torchvision (ImageNet/COCO weights, needs internet) |
    # bundled (the detector shipped with the package: fine-tune it) | path/to/weights.pth
    # (a backbone's or a whole detector's)
    pretrained: str = "none"
    # From-scratch runs first pre-train the backbone as a digit classifier on crops of the
    # training boxes for this many epochs (train/pretrain.py); 0 = off. Only with pretrained=none.
    pretrain_epochs: int = 2
    pretrain_max_images: int = 6000  # crops from the first N training images only (0 = all)
    # Backbone stages that train (0-5: layer4..layer1, conv1); only with pretrained weights.
    trainable_layers: int = 5
    # Which ResNet stages (1-4) feed the FPN; stage k has stride 2**(k+1). The RoI pooler takes
    # every digit-sized box from the finest map, so its stride decides how many cells a digit spans.
    returned_layers: list = field(default_factory=lambda: [1, 2])
    fpn_channels: int = 128  # FPN width (torchvision: 256)
    # Input scale: the short side is resized to min_size, the long side capped at max_size.
    # SVHN photos are 20-300 px; torchvision's 800 blows them up 10x for nothing.
    min_size: int = 64
    max_size: int = 224
    # Multi-scale training: each training batch is resized to one of these factors x
    # (min_size, max_size), drawn at random ([] = min_size only). Inference keeps min_size.
    train_scales: list = field(default_factory=list)
    # One list of anchor sizes (px at model input scale) per FPN level, smallest level first.
    anchor_sizes: list = field(default_factory=lambda: [[12, 16, 24], [32, 48, 64]])
    # Anchor aspect ratios in torchvision's convention: ratio = HEIGHT / WIDTH (digits are taller than wide).
    aspect_ratios: list = field(default_factory=lambda: [1.0, 2.0, 3.0])
    rpn_pre_nms_top_n_train: int = 300
    rpn_post_nms_top_n_train: int = 100
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 50  # an image has 1-5 digits
    rpn_batch_size_per_image: int = 128
    box_batch_size_per_image: int = 64  # sampled RoIs per image in training (torchvision: 512)
    box_positive_fraction: float = 0.5  # half of them digits
    # A sampled RoI is a digit when its IoU with one is >= box_fg_iou_thresh, background when
    # < box_bg_iou_thresh (torchvision: 0.5 / 0.5; in between: not sampled).
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_score_thresh: float = 0.01  # keep low scores: COCO mAP rewards recall
    box_detections_per_img: int = 30
    # Inference only: each detection's box is pooled again and regressed once more from itself,
    # this many times (0 = torchvision's single regression from the proposal).
    box_refine: int = 1
    representation_size: int = 256  # width of the two-layer box head (torchvision: 1024)
    roi_sampling_ratio: int = 1  # RoIAlign samples per 7x7 bin side (torchvision: 2)
    # Learn letters beside the number ("25D": the image entry's "letter_boxes", which the
    # renderer writes) as a class of their own, which the model drops from its output: without
    # it a D is read as a 0. Needs data with letter boxes to help.
    letter_class: bool = True
    # Feature maps and conv weights in channels-last (NHWC) memory, faster on a CPU; numerics
    # are unchanged up to float rounding and checkpoints load into either layout.
    channels_last: bool = True
    # The padded batch's sides are rounded up to a multiple of this: 8, the deepest stride of
    # returned_layers [1, 2] (torchvision: 32, which suits backbones down to stride 32).
    size_divisible: int = 8
    box_loss: str = "smooth_l1"  # smooth_l1 | giou
    # ---- data ----------------------------------------------------------------------------
    # Probability of first cropping a training photo around its digits (0.4-1.2 digit heights
    # per side), the view zoom-in reading gives the model (data/transforms.CropAroundDigits).
    crop_digits_p: float = 0.5
    workers: int = 2  # DataLoader worker processes
    # Training batches cut from pools of group_batches x batch_size samples sorted by aspect
    # ratio, so a batch pads its images little (1 = random batches, torchvision's plain loader).
    group_batches: int = 8
    # ---- optimisation --------------------------------------------------------------------
    epochs: int = 4
    batch_size: int = 8
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9); lr: linear warm-up, then cosine to 0
    lr: float = 0.001
    # The lr of a run that starts from a whole detector (pretrained=bundled or a detector's
    # file): fine-tuning at lr 1e-3 undoes what the model knew (0 = use lr). The bundle's own
    # training steps ran at 1.25e-4.
    finetune_lr: float = 1.25e-4
    weight_decay: float = 0.05
    warmup_iters: int = 100
    grad_accum: int = 1  # optimizer step every N batches (effective batch = batch_size * N)
    clip_grad: float = 10.0  # max gradient norm; 0 disables
    # Weight of each loss term in the sum that is minimised, e.g. {loss_classifier: 2.0}; terms not
    # named weigh 1. Terms: LOSS_NAMES (box head: classifier, box_reg; RPN: objectness, rpn_box_reg).
    loss_weights: dict = field(default_factory=dict)
    # Exponential moving average of the weights (0 = off): validation, best.pt and predictions use
    # the average, whose decay ramps up as min(ema_decay, (1 + n) / (10 + n)) after n steps. Helps
    # runs stopped early; with a cosine schedule that ends at lr 0 it gains little.
    ema_decay: float = 0.0
    # ---- distributed (torchrun) ----------------------------------------------------------
    # Effective batch = batch_size x world_size x grad_accum (batch_size is per process).
    # lr_scale: none (lr is used as written, so config.yaml shows the lr that ran) | linear
    # (lr x world_size, Goyal et al. 2017: keeps lr per image when processes are added).
    lr_scale: str = "none"
    sync_bn: bool = False  # SyncBatchNorm across GPUs (few images per GPU); CUDA only
    amp: bool = True  # mixed precision; used on CUDA only, CPU always trains in fp32
    seed: int = 0
    # ---- evaluation / checkpoints ----------------------------------------------------------
    save_every_steps: int = 200  # also write last.pt every N batches (a kill loses < N)
    eval_every: int = 1  # epochs between validation runs; 0 = only at the end
    best_metric: str = "map"  # map | accuracy: what best.pt tracks
    max_train_images: int = 0  # use only the first N training images (0 = all): quick runs
    max_valid_images: int = 0
    # Train for at most this many minutes (0 = no limit); the lr schedule is planned to end in
    # the budget (train/budget.py). The plan depends on the machine's speed, so two budgeted runs
    # may differ; for bit-reproducible runs set epochs and leave this at 0.
    time_budget_min: float = 0.0
    # ---- prediction / decoding -------------------------------------------------------------
    pred_score_thresh: float = 0.05  # detections kept in pred.json (low: mAP rewards recall)
    # pred.json's boxes grow by this fraction of their height on every side (pred.csv is read
    # from the unpadded ones): the renderer's boxes are tight around the ink, real SVHN's are
    # looser. `digitdet tune` chooses it on the split it tunes on and stores it with the weights.
    pred_box_pad: float = 0.0
    # pred.json's boxes of one photo take one height, the median of the digits read, as real
    # SVHN's annotators drew them; tuned with the pad.
    pred_box_same_height: bool = False
    decode_score_thresh: float = 0.5  # digits kept when reading the number (tuned)
    decode_iou_thresh: float = 0.5  # class-agnostic duplicate suppression when reading
    # Line reading (read/decode.py): boxes scoring >= this also join the digits read when they
    # sit beside one on its line; 0 = off. Tuned with decode_score_thresh.
    decode_line_thresh: float = 0.0
    # ... and when no digit reaches decode_score_thresh, line reading starts the line from the
    # best box over decode_line_thresh (every SVHN crop holds a number) only in photos whose
    # short side is under this many input scales (min_size); a larger photo, a phone's picture
    # of a house front, need not hold one. 0 = in every photo.
    decode_line_start_below: float = 4.0
    # Zoom-in reading (read/zoom.py): photos whose digits are small are read again on a crop
    # around them.
    zoom_read: bool = True
    # Second look (torch backend): photos where the first finds no digit are read again whole
    # at this many times the input scale, the more confident look kept; 0 = off.
    zoom_empty_scale: float = 2.0
    # Scan (torch backend): a photo whose short side holds 4+ input scales and where no digit
    # reaches decode_score_thresh is read whole at twice zoom_empty_scale, then twice that, up
    # to this many times the input scale: the number in a phone's photo of a house front. 0 = off.
    zoom_scan: float = 8.0

    # ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config", saved: bool = False, resuming: bool = False) -> "Config":
        """Build from a dict; unknown keys are an error naming ``source``.

        ``saved``: ``d`` is a config a run wrote (a checkpoint's, pred_config.json), maybe by an
        older digitdet: keys it lacks take the values that were in force then
        (:data:`SAVED_BEFORE_DEFAULTS`), and settings that have since become constants are
        accepted when they hold the constant's value, or only ever mattered to training (not when
        ``resuming`` that training). Values are checked for user input, not for saved configs.
        """
        if not isinstance(d, dict):  # e.g. a checkpoint whose "config" was saved as a string
            shown = repr(d) if len(repr(d)) <= 60 else repr(d)[:57] + "..."
            raise ValueError(f"{source}: the config must be a mapping of setting: value, got "
                             f"{type(d).__name__} {shown}")
        known = {f.name for f in dataclasses.fields(cls)}
        d = _without_retired(d, source, saved, history=saved and not resuming)
        if saved:
            d = {**{k: v for k, v in SAVED_BEFORE_DEFAULTS.items() if k not in d}, **d}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown config key(s) {unknown}; known keys: {sorted(known)}")
        cfg = cls()
        for k, v in d.items():
            setattr(cfg, k, _coerce(k, v, getattr(cfg, k), source))
        if not saved:
            _validate(cfg, source)
        return cfg

    def override(self, pairs: list[str]) -> "Config":
        """Apply ``key=value`` strings (values parsed as YAML: 0.01, true, [16, 32])."""
        d = self.to_dict()
        for p in pairs:
            if "=" not in p:
                raise ValueError(f"override {p!r} is not of the form key=value")
            k, v = p.split("=", 1)
            try:
                d[k.strip()] = yaml.safe_load(v)
            except yaml.YAMLError as e:
                raise ValueError(f"override {p!r}: the value is not valid YAML ({_yaml_problem(e, False)})") from None
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


# Settings that are constants now (next to the code that uses them), with their value: a config
# may still name one at that value. Those of TRAINING_ONLY shaped how a saved model was trained,
# not how it reads, so a saved config may hold any value of them.
RETIRED = {"norm": "bn", "fpn_extra_pool": False, "rpn_nms_thresh": 0.7, "rpn_fg_iou_thresh": 0.7,
           "rpn_bg_iou_thresh": 0.3, "box_nms_thresh": 0.5, "smooth_l1_beta": 1.0 / 9, "augment": "digits",
           "momentum": 0.9, "scheduler": "cosine", "warmup_factor": 0.001, "lr_steps": [8, 11], "lr_gamma": 0.1,
           "deterministic": False, "early_stop_patience": 0, "pred_max_per_image": 30, "eval_batch_size": 32,
           "zoom_score": 0.3, "zoom_below": 0.45, "zoom_margin": 0.75, "zoom_scan_score": 0.98}
TRAINING_ONLY = {"rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "smooth_l1_beta", "augment", "momentum", "scheduler",
                 "warmup_factor", "lr_steps", "lr_gamma", "deterministic", "early_stop_patience", "eval_batch_size"}
# What a key missing from a saved config meant: the defaults of the versions that wrote configs
# without it (before the defaults became the default recipe). Configs saved since hold every key.
SAVED_BEFORE_DEFAULTS = {
    "pretrain_epochs": 0, "pretrain_max_images": 0, "returned_layers": [2, 3, 4], "min_size": 96, "max_size": 320,
    "anchor_sizes": [[16, 24], [32, 48], [64, 96]], "rpn_pre_nms_top_n_train": 500, "rpn_post_nms_top_n_train": 200,
    "box_positive_fraction": 0.25, "box_refine": 0, "roi_sampling_ratio": 2, "size_divisible": 32,
    "crop_digits_p": 0.0, "letter_class": False, "epochs": 12, "batch_size": 16, "optimizer": "sgd", "lr": 0.02,
    "weight_decay": 1e-4, "warmup_iters": 200,
    "group_batches": 1,  # a run saved before group_batches existed made random batches, and resumes so
}


def _without_retired(d: dict, source: str, saved: bool, history: bool) -> dict:
    """``d`` less the RETIRED keys; ValueError for one whose value this version cannot honour
    (``history``: training-only settings of a finished run need no honouring)."""
    for key in sorted(set(d) & set(RETIRED)):
        value, fixed = d[key], RETIRED[key]
        same = value == fixed or (isinstance(fixed, float) and isinstance(value, (int, float))
                                  and abs(value - fixed) < 1e-9)
        if not same and not (history and key in TRAINING_ONLY):
            raise ValueError(f"{source}: {key}={value!r} is no longer a setting: digitdet always uses {fixed!r} "
                             f"(a digitdet version before 0.2 reads or resumes it as it was made)"
                             if saved else f"{source}: {key} is no longer a setting (always {fixed!r}); remove it")
    return {k: v for k, v in d.items() if k not in RETIRED}


# checkpoint "decoder" key -> Config field
DECODER_FIELDS = {"score_thresh": "decode_score_thresh", "iou_thresh": "decode_iou_thresh",
                  "line_thresh": "decode_line_thresh", "box_pad": "pred_box_pad",
                  "box_same_height": "pred_box_same_height"}


# Names a field may hold; the builders that use them say the same in their own errors.
CHOICES = {"backbone": ("resnet18_fpn", "resnet34_fpn", "resnet50_fpn", "resnet50_fpn_v2", "resnet101_fpn",
                        "mobilenet_v3_fpn"),
           "optimizer": ("adamw", "sgd"), "box_loss": ("smooth_l1", "giou"), "best_metric": ("map", "accuracy"),
           "lr_scale": ("none", "linear")}
POSITIVE = ("min_size", "max_size", "batch_size", "grad_accum", "fpn_channels", "representation_size",
            "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test",
            "rpn_batch_size_per_image", "box_batch_size_per_image", "box_detections_per_img", "roi_sampling_ratio",
            "size_divisible", "group_batches", "lr")
NOT_NEGATIVE = ("epochs", "workers", "pretrain_epochs", "pretrain_max_images", "trainable_layers", "box_refine",
                "warmup_iters", "weight_decay", "clip_grad", "finetune_lr", "ema_decay", "save_every_steps", "eval_every",
                "max_train_images", "max_valid_images", "time_budget_min", "pred_box_pad", "decode_line_start_below",
                "zoom_empty_scale", "zoom_scan")
FRACTIONS = ("box_positive_fraction", "box_fg_iou_thresh", "box_bg_iou_thresh", "box_score_thresh", "crop_digits_p",
             "pred_score_thresh", "decode_score_thresh", "decode_iou_thresh", "decode_line_thresh")


def _validate(cfg: Config, source: str) -> None:
    """ValueError naming ``source`` and the field for a value no run could use."""
    for key, names in CHOICES.items():
        if getattr(cfg, key) not in names:
            raise ValueError(f"{source}: {key}={getattr(cfg, key)!r}; choose one of {', '.join(names)}")
    for key in POSITIVE:
        if not getattr(cfg, key) > 0:
            raise ValueError(f"{source}: {key} must be > 0, got {getattr(cfg, key)!r}")
    for key in NOT_NEGATIVE:
        if not getattr(cfg, key) >= 0:
            raise ValueError(f"{source}: {key} must be >= 0, got {getattr(cfg, key)!r}")
    for key in FRACTIONS:
        if not 0 <= getattr(cfg, key) <= 1:
            raise ValueError(f"{source}: {key} must be between 0 and 1, got {getattr(cfg, key)!r}")
    if not cfg.returned_layers or not all(r in (1, 2, 3, 4) for r in cfg.returned_layers):
        raise ValueError(f"{source}: returned_layers must list ResNet stages 1-4, got {cfg.returned_layers!r}")


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


def _yaml_problem(e: yaml.YAMLError, where: bool = True) -> str:
    """A YAML parser's error on one line: what is wrong and (``where``) at which line and column,
    not the parser's several lines of context and carets."""
    def at(mark) -> str:
        return f" (line {mark.line + 1}, column {mark.column + 1})" if where and mark is not None else ""

    problem = (getattr(e, "problem", None) or str(e).splitlines()[0]) + at(getattr(e, "problem_mark", None))
    context = getattr(e, "context", None)
    text = f"{context}{at(getattr(e, 'context_mark', None))}: {problem}" if context else problem
    return " ".join(text.split())


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
        raise ValueError(f"{path}: not valid YAML ({_yaml_problem(e)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    if not data and path.parent != CONFIG_DIR:
        logging.getLogger("digitdet").warning("%s sets nothing: the run uses the built-in defaults (the default "
                                              "recipe)", path)
    cfg = Config.from_dict(data, source=str(path))
    return cfg.override(overrides or [])
