"""Every row of the reliability review's table (../shared/reviews/reliability.md), as the user ran it.

One table-driven test: each :class:`Case` is a row of the review (its id, e.g. "1a", is the pytest
id), plus "gn" (a checkpoint whose backbone used GroupNorm), two real-signal variants of 8a and 10a
(slow), and three notes of the review found after its rows (4a-warn, 7c-msg, 7c-warn). A case
builds its bad input in tmp_path from the tiny dataset of conftest.py, runs the ``digitdet``
command in-process (a subprocess only where a real kill -9 or SIGINT is the point) and checks the
promise: exit status 2 and ONE line on stderr naming the file (and record, key or value) for a
user error, 0 where the input is handled (a broken photo is read as -1, a box outside its image is
clipped and said); no traceback; nothing lost or half-written: a failed command changes no file
that was there before and writes no output, and no ``.*.tmp`` is left anywhere.

Row by row, what the review found at 2c56139 and what holds now is in the ``review`` field.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import digitdet
from digitdet.cli import main
from digitdet.io import load_checkpoint, read_pred_csv, read_pred_json, save_checkpoint
from digitdet.models.faster_rcnn import BUNDLED_WEIGHTS

# The smallest training that runs (tests/test_train.py's): 12 photos, 3 steps of 4 an epoch.
TINY = ["fpn_channels=32", "representation_size=64", "min_size=48", "max_size=128", "workers=0",
        "batch_size=4", "warmup_iters=2", "eval_every=0", "max_train_images=12", "max_valid_images=4",
        "rpn_post_nms_top_n_train=64", "box_batch_size_per_image=16", "pretrain_epochs=0"]
ONE_STEP = [*TINY, "epochs=1", "max_train_images=4", "max_valid_images=2"]  # a run that only has to start
# The runs that are killed and resumed: 2 epochs of 2 steps, last.pt after every step, no time budget.
RESUMED = [*TINY, "epochs=2", "max_train_images=8", "save_every_steps=1", "time_budget_min=0"]
OUTPUTS = ("*.pt", "pred.json", "pred.csv", "results.jsonl", "metrics.csv", "image_ids.csv")
PIXEL_BOMB = 6_000  # Image.MAX_IMAGE_PIXELS for the bomb cases: a 200x100 photo is over twice it


# ---- running a command, and what it left ----------------------------------------------------

@dataclasses.dataclass
class Result:
    argv: list
    rc: int
    out: str
    err: str
    log: str
    warned: list  # warnings a real run would print on stderr (not Deprecation ones)


@dataclasses.dataclass
class Cmd:
    """One command of a row; ``says``: what its one-line error (or, exit 0, its log) must name;
    ``rc`` overrides the row's exit status for this command."""
    argv: list
    says: tuple = ()
    rc: int | None = None


def _digest(folder: Path) -> dict:
    return {p: hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


class Bench:
    """A case's tmp_path, the tiny dataset, and the command runner."""

    def __init__(self, tmp: Path, tiny: Path, capsys, caplog, monkeypatch, factory):
        self.tmp, self.tiny, self.capsys, self.caplog, self.mp, self.factory = tmp, tiny, capsys, caplog, monkeypatch, factory
        self.results: list[Result] = []
        self.note: dict = {}  # what a row's make() leaves for its then()

    # -- inputs --
    def data(self) -> Path:
        """A copy of the tiny dataset, to break."""
        d = self.tmp / "data"
        if not d.exists():
            shutil.copytree(self.tiny, d)
        return d

    def coco(self, change: Callable, split: str = "train") -> Path:
        """The copy with ``change(coco)`` applied to its train.json (its return value, if any, is the new content)."""
        path = self.data() / f"{split}.json"
        coco = json.loads(path.read_text())
        new = change(coco)
        path.write_text(json.dumps(coco if new is None else new))
        return self.data()

    def photos(self, n: int = 3, name: str = "photos") -> Path:
        """A folder of the first ``n`` test photos (1.png ...)."""
        folder = self.tmp / name
        folder.mkdir(exist_ok=True)
        for i in range(1, n + 1):
            shutil.copy(self.tiny / "test" / f"{i}.png", folder / f"{i}.png")
        return folder

    def photo(self, i: int = 1) -> Image.Image:
        return Image.open(self.tiny / "test" / f"{i}.png").convert("RGB")

    def truth(self) -> dict[int, str]:
        """The number in each test photo, from test_gt.json."""
        gt = json.loads((self.tiny / "test_gt.json").read_text())
        digits: dict[int, list] = {}
        for a in gt["annotations"]:
            digits.setdefault(a["image_id"], []).append((a["bbox"][0], str(a["category_id"] - 1)))
        return {i: "".join(d for _, d in sorted(v)) for i, v in digits.items()}

    # -- commands --
    def predict_args(self, images, *extra, out=None) -> list:
        return ["predict", "--images", images, "--out", out or self.tmp / "out", "--quiet", "--workers", "0",
                "--device", "cpu", *extra]

    def train_args(self, *extra, data=None, out=None, config="cpu_fast", tiny=TINY) -> list:
        return ["train", "--data", data or self.tiny, "--out", out or self.tmp / "run", "--config", config,
                "--quiet", "--device", "cpu", *tiny, *extra]

    def run(self, *argv) -> Result:
        """``digitdet ARGV`` in this process: exit status, stdout, stderr, the digitdet log. A user
        error (2) must leave every file under tmp_path as it was, and write no output."""
        argv = [str(a) for a in argv]
        before = _digest(self.tmp)
        n_logged = len(self.caplog.records)
        with self.caplog.at_level(logging.INFO, logger="digitdet"), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # as a real run has it: digitdet.data.images silences Pillow's nameless warning and names the photo itself
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
            rc = main(argv)
        out, err = self.capsys.readouterr()
        log = "\n".join(r.getMessage() for r in self.caplog.records[n_logged:])
        warned = [f"{w.category.__name__}: {w.message}" for w in caught
                  if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))]
        r = Result(argv, rc, out, err, log, warned)
        self.results.append(r)
        assert "Traceback" not in err + log, r
        if rc == 2:
            after = _digest(self.tmp)
            changed = [str(p) for p, h in before.items() if after.get(p) != h]
            assert not changed, f"a failed command changed {changed}"
            new = [p for p in after if p not in before and any(p.match(o) for o in OUTPUTS)]
            assert not new, f"a failed command wrote {new}"
        return r

    def finish(self) -> None:
        """What every row must leave: no temp file of an atomic write, anywhere."""
        assert not list(self.tmp.rglob(".*.tmp")), list(self.tmp.rglob(".*.tmp"))


def user_error(r: Result, *names) -> None:
    """Exit 2, one line ``digitdet CMD: error: ...`` naming each of ``names``, nothing else on stderr."""
    assert r.rc == 2, r
    assert r.err.count("\n") == 1 and r.err.startswith(f"digitdet {r.argv[0]}: error: "), r.err
    assert not r.warned, f"a real run would print these on stderr too: {r.warned}"
    for name in names:
        assert str(name) in r.err, (name, r.err)


def handled(r: Result, *names) -> None:
    """Exit 0, no error on stderr, and the log names each of ``names`` (the file, the record, what was done)."""
    assert r.rc == 0 and "error" not in r.err, r
    for name in names:
        assert str(name) in r.log, (name, r.log)


# ---- inputs that break ----------------------------------------------------------------------

def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


class Hostile:
    """Unpickled, it would run ``touch PWNED``."""

    def __init__(self, pwned: Path):
        self.pwned = pwned

    def __reduce__(self):
        return os.system, (f"touch {self.pwned}",)


class Evaluates:
    def __reduce__(self):
        return eval, ("1 + 1",)


def read_only(mp, folder: Path, code: int = errno.EROFS) -> None:
    """Make ``folder`` (existing or not) refuse writes as a read-only mount does (or, with EACCES, as a
    chmod 555 folder does to a user who is not root): os.open for writing and os.mkdir fail inside it."""
    root = os.path.abspath(folder)
    real_open, real_mkdir = os.open, os.mkdir

    def inside(path) -> bool:
        p = os.path.abspath(os.fsdecode(path))
        return p == root or p.startswith(root + os.sep)

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is None and inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def fake_mkdir(path, mode=0o777, *, dir_fd=None):
        if dir_fd is None and inside(path) and not os.path.exists(path):
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real_mkdir(path, mode, dir_fd=dir_fd)

    mp.setattr(os, "open", fake_open)
    mp.setattr(os, "mkdir", fake_mkdir)


def no_work(b: Bench) -> None:
    """Fail the row if the command starts its work (loading the model, reading the dataset,
    pre-training) before it has found a bad --out."""
    def started(*a, **k):
        raise AssertionError("the command started its work before checking --out")
    b.mp.setattr("digitdet.read.detector.load_detector", started)  # the torch backend's
    b.mp.setattr("digitdet.cli.predict.load_onnx_detector", started)  # onnxruntime's
    b.mp.setattr("digitdet.train.fit.load_split", started)
    b.mp.setattr("digitdet.train.fit.pretrain_for_run", started)


def group_norm_model(b: Bench, *extra):
    """A tiny detector built as digitdet before 0.2 built it with ``norm: gn``: GroupNorm in the backbone."""
    import digitdet.models.backbones as backbones
    from digitdet.config import Config
    from digitdet.models.faster_rcnn import build_model
    cfg = Config().override([*TINY, *extra])
    with b.mp.context() as m:
        m.setattr(backbones, "NORM_LAYER",
                  lambda c: torch.nn.GroupNorm(next(g for g in (32, 16, 8, 4, 2, 1) if c % g == 0), c))
        return build_model(cfg), cfg


# ---- checks after a command -------------------------------------------------------------------

def boxes(pred: list, image_id: int, score: float = 0.5) -> list:
    return sorted((r["bbox"], r["category_id"]) for r in pred if r["image_id"] == image_id and r["score"] >= score)


def reads_alike(b: Bench, out: Path, pairs: dict) -> None:
    """``pairs`` {variant id: (reference id, px)}: the variant reads the reference's number (the
    photo's true one) with the same digits' boxes, each side within ``px``."""
    numbers, pred = read_pred_csv(out / "pred.csv"), read_pred_json(out / "pred.json")
    for var, (ref, px) in pairs.items():
        assert numbers[var] == numbers[ref] == b.note.get("truth", numbers[ref]), (var, ref, numbers)
        got, want = boxes(pred, var), boxes(pred, ref)
        assert [c for _, c in got] == [c for _, c in want], (var, got, want)
        assert all(np.allclose(g, w, atol=px) for (g, _), (w, _) in zip(got, want)), (var, got, want)


def same_run(a: Path, b: Path) -> None:
    """Two run folders hold bit-identical weights (last.pt, best.pt) and the same metrics.csv (but its images_per_s)."""
    for name in ("last.pt", "best.pt"):
        x, y = load_checkpoint(a / name)["model"], load_checkpoint(b / name)["model"]
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), (name, k)
    assert _metrics(a) == _metrics(b)


def _metrics(run: Path) -> list:
    import csv
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "images_per_s"} for row in csv.DictReader(f)]


def nothing_started(b: Bench) -> None:
    """A bad setting stops train before it makes its run folder."""
    assert not (b.tmp / "run").exists()


_REFERENCE: dict = {}


def reference_run(b: Bench) -> Path:
    """The run the killed and resumed ones must equal: trained once, uninterrupted."""
    if "run" not in _REFERENCE:
        run = b.factory.mktemp("uninterrupted") / "run"
        assert b.run(*b.train_args(*RESUMED, out=run)).rc == 0
        _REFERENCE["run"] = run
    return _REFERENCE["run"]


def stopped_run(b: Bench, steps: int) -> Path:
    """RUN as a kill -9 right after the last.pt of optimizer step ``steps`` leaves it (fit stops there)."""
    from digitdet.config import load_config
    from digitdet.train.fit import fit
    run = b.tmp / "run"
    assert fit(load_config("cpu_fast", RESUMED), b.tiny, run, progress=False, stop_after_steps=steps)["stopped"]
    return run


def resumed(b: Bench, run: Path, at: str) -> None:
    """``train --resume`` goes on from ``at`` ("epoch 0, batch 2") and ends as the uninterrupted run."""
    r = b.run("train", "--data", b.tiny, "--out", run, "--resume", "--quiet", "--device", "cpu")
    handled(r, f"resuming {run} at {at}")
    same_run(reference_run(b), run)


# ---- the rows -------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    id: str  # the review's row
    review: str  # the row's case, and what the review saw at 2c56139
    make: Callable  # (Bench) -> Cmd, list of Cmd, argv list, or None when it runs and checks itself
    rc: int | None = 2  # the exit status the promise wants
    says: tuple = ()  # what every command's error line (or log, exit 0) names
    then: Callable | None = None  # (Bench) -> None: what must hold after
    also: str = ""  # other tests of the same promise
    marks: tuple = ()


def _training_photo(kind: str, workers: bool = True, *extra):
    """Rows 1a-1e: train with one broken photo in DATA/train."""
    def make(b):
        p = b.data() / "train" / "5.png"
        if kind == "truncated":
            truncate(p)
        elif kind == "empty":
            p.write_bytes(b"")
        else:
            p.write_text("this is not a photo")
        tiny = TINY if not workers else [o for o in TINY if o != "workers=0"]
        return Cmd(b.train_args(*extra, data=b.data(), tiny=tiny), ("train.json", "5.png", "not a readable image"))
    return make


def _pretraining_is_quiet(b):
    """1e: the photo is named before pre-training starts; and with good photos --quiet shows no bar, on a
    terminal too (neither the photos' check nor the pre-training's)."""
    b.mp.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # tqdm draws on a terminal unless told not to
    truncate(b.data() / "train" / "5.png")
    bad = b.run(*b.train_args("pretrain_epochs=1", data=b.data(), tiny=[o for o in TINY if o != "workers=0"]))
    user_error(bad, "5.png", "not a readable image")
    assert not (b.tmp / "run" / "backbone.pt").exists()
    good = b.run(*b.train_args("pretrain_epochs=1", *ONE_STEP[len(TINY):], out=b.tmp / "good"))
    handled(good, "pre-training the resnet18_fpn backbone")
    assert (b.tmp / "good" / "backbone.pt").exists() and good.err == "", good.err


BACKENDS = {"out": [], "out_torch": ["--backend", "torch"]}  # the default (onnxruntime for the bundle), and torch


def _both_backends(b, images, says=()) -> list:
    return [Cmd(b.predict_args(images, *extra, out=b.tmp / out), says, rc=0) for out, extra in BACKENDS.items()]


def _broken_test_photos(b):
    photos = b.photos(6)
    truncate(photos / "2.png")
    (photos / "4.png").write_bytes(b"")
    (photos / "6.png").write_text("not a photo")
    return _both_backends(b, photos, ("2.png", "4.png", "6.png", "written as -1"))


def _broken_test_photos_then(b):
    truth = b.truth()
    for out, r in zip(BACKENDS, b.results):
        assert read_pred_csv(b.tmp / out / "pred.csv") == {i: ("-1" if i in (2, 4, 6) else truth[i]) for i in range(1, 7)}
        assert {x["image_id"] for x in read_pred_json(b.tmp / out / "pred.json")} <= {1, 3, 5}
        assert json.loads(r.out)["unreadable"] == 3


def _variants(write: Callable, pairs: dict):
    """Rows 3a-3h: photo 1 (and its variants, ``write(b, folder)``) read alike (:func:`reads_alike`)."""
    def make(b):
        folder = b.tmp / "variants"
        folder.mkdir()
        b.photo(1).save(folder / "1.png")
        write(b, folder)
        b.note.update(pairs=pairs, truth=b.truth()[1])
        return Cmd(b.predict_args(folder), rc=0)
    return make


def _read_alike(b):
    reads_alike(b, b.tmp / "out", b.note["pairs"])


def _modes(b, folder):  # 3a: RGBA opaque; RGBA transparent around (white beneath, read on white); LA
    photo = b.photo(1)
    rgba = photo.convert("RGBA")
    rgba.save(folder / "2.png")
    framed, see_through = photo.copy(), photo.convert("RGBA")
    w, h = photo.size
    for x in range(w):
        for y in range(h):
            if min(x, y, w - 1 - x, h - 1 - y) < 3:
                framed.putpixel((x, y), (255, 255, 255))
                see_through.putpixel((x, y), (0, 0, 0, 0))  # black, but transparent: must read as white
    framed.save(folder / "3.png")
    see_through.save(folder / "4.png")
    photo.convert("L").save(folder / "5.png")
    photo.convert("LA").save(folder / "6.png")


def _sixteen_bit(b, folder):  # 3b: I;16 beside the 8-bit grey it was made from
    grey = ImageOps.autocontrast(b.photo(1).convert("L"))  # 0..255, as the 16-bit one is scaled back
    grey.save(folder / "1.png")
    Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257).save(folder / "2.png")
    assert Image.open(folder / "2.png").mode in ("I;16", "I")


def _palette(b, folder):  # 3c
    p = b.photo(1).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    p.convert("RGB").save(folder / "1.png")
    p.save(folder / "2.png")


def _one_bit(b, folder):  # 3d
    b.photo(1).convert("1").save(folder / "2.png")
    b.photo(1).convert("L").convert("1", dither=Image.Dither.NONE).save(folder / "3.png")


def _one_bit_then(b):
    numbers = read_pred_csv(b.tmp / "out" / "pred.csv")
    assert set(numbers) == {1, 2, 3} and "unreadable" not in b.results[-1].log
    assert json.loads(b.results[-1].out)["unreadable"] == 0  # read, well or not: the picture is destroyed


def _cmyk(b, folder):  # 3e
    b.photo(1).convert("CMYK").save(folder / "2.jpg", quality=95)
    Image.open(folder / "2.jpg").convert("RGB").save(folder / "1.png")


def _exif_turned(b, folder):  # 3f: pixels stored turned, EXIF orientation 6 (PNG, and JPEG beside its upright self)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = b.photo(1)
    upright.transpose(Image.Transpose.ROTATE_90).save(folder / "2.png", exif=exif)
    upright.save(folder / "3.jpg", quality=95)
    upright.transpose(Image.Transpose.ROTATE_90).save(folder / "4.jpg", quality=95, exif=exif)


def _webp_bmp(b, folder):  # 3g
    b.photo(1).save(folder / "2.webp", lossless=True)
    b.photo(1).save(folder / "3.bmp")


def _tif_gif(b, folder):  # 3h
    b.photo(1).save(folder / "2.tif")
    b.photo(1).save(folder / "3.tiff")
    b.photo(1).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "4.gif")


def _tif_gif_then(b):
    _read_alike(b)
    assert set(read_pred_csv(b.tmp / "out" / "pred.csv")) == {1, 2, 3, 4}  # the gif too


def _huge_photo(b):
    """4a, scaled down: a photo over READ_SIDE_LIMIT (here 200 px, in place of 6,000) and over Pillow's
    warning size is read reduced, its boxes mapped back to its own pixels."""
    import digitdet.data.images as images
    folder = b.tmp / "big"
    folder.mkdir()
    b.photo(1).resize((95 * 4, 48 * 4), Image.Resampling.BICUBIC).save(folder / "7.jpg", quality=95)
    b.mp.setattr(images, "READ_SIDE_LIMIT", 200)
    b.mp.setattr(images.load_rgb_within, "__defaults__", (200,))
    b.mp.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)  # 72,960 pixels: Pillow's DecompressionBombWarning, not its error
    return _both_backends(b, folder)


def _huge_photo_then(b):
    for out in BACKENDS:
        assert read_pred_csv(b.tmp / out / "pred.csv") == {7: b.truth()[1]}
        xs = [x + w for (x, _, w, _), _ in boxes(read_pred_json(b.tmp / out / "pred.json"), 7)]
        assert max(xs) > 200, out  # in the photo's 380-px frame, not the reduced one's


def _bomb(b):
    photos = b.photos(3)
    Image.new("RGB", (200, 100), "white").save(photos / "99.png")  # 20,000 pixels: over twice the limit
    b.mp.setattr(Image, "MAX_IMAGE_PIXELS", PIXEL_BOMB)
    return _both_backends(b, photos, ("99.png", "written as -1"))


def _bomb_then(b):
    truth = b.truth()
    for out in BACKENDS:
        assert read_pred_csv(b.tmp / out / "pred.csv") == {1: truth[1], 2: truth[2], 3: truth[3], 99: "-1"}, out


def _names(b):  # 5a
    folder = b.tmp / "names"
    folder.mkdir()
    for i, name in ((3, "3.png"), (1, "10.png"), (2, "photo.jpg"), (4, "front door.jpg")):
        b.photo(i).save(folder / name, quality=95)
    return Cmd(b.predict_args(folder), rc=0)


def _names_then(b):
    truth, out = b.truth(), b.tmp / "out"
    assert read_pred_csv(out / "pred.csv") == {3: truth[3], 10: truth[1], 11: truth[4], 12: truth[2]}
    assert (out / "image_ids.csv").read_text().splitlines()[1:] == ["3,3.png", "10,10.png", "11,front door.jpg",
                                                                    "12,photo.jpg"]


def _same_id(b):  # 5b
    photos = b.photos(1)
    shutil.copy(photos / "1.png", photos / "01.png")
    return Cmd(b.predict_args(photos), ("1.png", "01.png", "image id 1"))


def _upper_case(b):  # 5c
    folder = b.tmp / "upper"
    folder.mkdir()
    b.photo(1).save(folder / "1.PNG", format="PNG")
    b.photo(2).save(folder / "2.JPG", format="JPEG", quality=95)
    return Cmd(b.predict_args(folder), rc=0)


def _nested(b):  # 5d
    photos = b.photos(1)
    (photos / "sub").mkdir()
    b.photo(2).save(photos / "sub" / "2.png")
    return Cmd(b.predict_args(photos), ("sub", "subfolder"), rc=0)


def _out_is_a_file(b, command: str):  # 5i, 5l
    taken = b.tmp / "taken"
    taken.write_text("keep me")
    no_work(b)
    args = b.predict_args(b.tiny / "test", out=taken) if command == "predict" else b.train_args(out=taken)
    return Cmd(args, ("taken", "is a file"))


def _out_read_only(b, command: str):  # 5j, 5l
    ro = b.tmp / "ro"
    ro.mkdir()
    read_only(b.mp, ro)
    no_work(b)
    if command == "predict":
        return [Cmd(b.predict_args(b.tiny / "test", out=ro / "sub"), (ro / "sub", "cannot write there")),
                Cmd(b.predict_args(b.tiny / "test", out=ro), (ro, "cannot write there"))]
    return [Cmd(b.train_args(out=ro / "run"), (ro / "run", "cannot write there")),
            Cmd(b.train_args(out=ro), (ro, "cannot write there"))]


def _chmod_555(b):  # 5k: as a user who is not root; root is refused too, by the EACCES a user would get
    out = b.tmp / "locked"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root writes into a 555 folder: give it the error a user gets
        read_only(b.mp, out, errno.EACCES)
    no_work(b)
    return Cmd(b.predict_args(b.tiny / "test", out=out), (out, "cannot write there", "Permission denied"))


def _annotation(change, *says, rc=2):
    """Rows 6*: train with train.json changed by ``change(coco)``."""
    def make(b):
        tiny = TINY if rc == 2 else ONE_STEP
        return Cmd(b.train_args(data=b.coco(change), tiny=tiny), ("train.json", *says) if rc == 2 else says, rc)
    return make


def _set_bbox(bbox):
    return lambda c: c["annotations"][0].__setitem__("bbox", bbox)


def _variants_of(*changes_and_says):
    """A row of several variants: (change, says) each."""
    def make(b):
        cmds = []
        for k, (change, says) in enumerate(changes_and_says):
            data = b.tmp / f"data{k}"
            shutil.copytree(b.tiny, data)
            coco = json.loads((data / "train.json").read_text())
            new = change(coco)
            (data / "train.json").write_text(json.dumps(coco if new is None else new))
            cmds.append(Cmd(b.train_args(data=data), ("train.json", *says)))
        return cmds
    return make


def _extra_photo_on_disk(b):  # 6i
    shutil.copy(b.data() / "train" / "1.png", b.data() / "train" / "999.png")
    return Cmd(b.train_args(data=b.data(), tiny=ONE_STEP), rc=0)


def _weights(b, name: str, write: Callable) -> Path:
    p = b.tmp / name
    write(p)
    return p


def _bundled_state() -> dict:
    return load_checkpoint(BUNDLED_WEIGHTS)


def _as_last_pt(b, weights: Path) -> list:
    """``train --resume`` of a run (RESUMED/) whose last.pt is ``weights``."""
    run = b.tmp / "resumed"
    run.mkdir(exist_ok=True)
    shutil.copy(weights, run / "last.pt")
    return ["train", "--data", b.tiny, "--out", run, "--resume", "--quiet", "--device", "cpu"]


def _truncated_pt(b):  # 7a
    w = _weights(b, "X.pt", lambda p: p.write_bytes(BUNDLED_WEIGHTS.read_bytes()[: BUNDLED_WEIGHTS.stat().st_size // 2]))
    return Cmd(b.predict_args(b.photos(1), "--weights", w), ("X.pt", "not a readable torch file"))


def _junk_pt(b):  # 7b
    rnd = _weights(b, "random.pt", lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)))
    empty = _weights(b, "empty.pt", lambda p: p.write_bytes(b""))
    photos = b.photos(1)
    return [Cmd(b.predict_args(photos, "--weights", rnd), ("random.pt", "cannot be loaded safely")),
            Cmd(b.predict_args(photos, "--weights", empty), ("empty.pt", "not a readable torch file"))]


def _hostile(b):  # 7c
    pwned = b.tmp / "PWNED"
    b.note["pwned"] = pwned
    zipped = _weights(b, "hostile.pt", lambda p: torch.save({"model": Hostile(pwned), "config": {}}, p))
    raw = _weights(b, "raw.pt",  # protocol 2: Python's default 4 is row 7c-warn
                   lambda p: p.write_bytes(pickle.dumps({"model": Hostile(pwned), "config": {}}, protocol=2)))
    photos = b.photos(1)
    return [Cmd(b.predict_args(photos, "--weights", zipped), ("hostile.pt", "cannot be loaded safely")),
            Cmd(b.predict_args(photos, "--weights", raw), ("raw.pt", "cannot be loaded safely")),
            Cmd(_as_last_pt(b, zipped), ("last.pt", "cannot be loaded safely"))]


def _hostile_then(b):
    assert not b.note["pwned"].exists()  # refused, never run


def _evaluates(b):  # 7d
    w = _weights(b, "eval.pt", lambda p: torch.save({"model": Evaluates(), "config": {}}, p))
    return [Cmd(b.predict_args(b.photos(1), "--weights", w), ("eval.pt", "eval")),
            Cmd(_as_last_pt(b, w), ("last.pt", "eval"))]


def _classifier_state(b):  # 7e
    from torchvision.models import resnet18
    w = _weights(b, "resnet18.pt", lambda p: torch.save(resnet18(weights=None).state_dict(), p))
    return [Cmd(b.predict_args(b.photos(1), "--weights", w), ("resnet18.pt", "not a digitdet checkpoint")),
            Cmd(_as_last_pt(b, w), ("last.pt", "not a digitdet checkpoint"))]


def _other_architecture(b):  # 7f
    from torchvision.models import resnet18
    state = _bundled_state()
    other = _weights(b, "r34.pt", lambda p: save_checkpoint(p, {**state, "config": {**state["config"],
                                                                                      "backbone": "resnet34_fpn"}}))
    foreign = _weights(b, "foreign.pt", lambda p: save_checkpoint(p, {**state, "model": resnet18(weights=None).state_dict()}))
    photos = b.photos(1)
    return [Cmd(b.predict_args(photos, "--weights", other), ("r34.pt", "do not fit the model its config describes")),
            Cmd(b.predict_args(photos, "--weights", foreign), ("foreign.pt", "do not fit the model its config describes")),
            Cmd(_as_last_pt(b, other), ("last.pt", "do not fit the model its config describes"))]


def _string_config(b):  # 7g
    w = _weights(b, "X.pt", lambda p: save_checkpoint(p, {**_bundled_state(), "config": "hello"}))
    return Cmd(b.predict_args(b.photos(1), "--weights", w), ("X.pt", "must be a mapping", "hello"))


def _bad_pretrained(b):  # 7h
    pwned = b.tmp / "PWNED"
    b.note["pwned"] = pwned
    hostile = _weights(b, "hostile.pth", lambda p: torch.save({"backbone.x": Hostile(pwned)}, p))
    raw = _weights(b, "raw.pth", lambda p: p.write_bytes(pickle.dumps({"backbone.x": Hostile(pwned)})))  # protocol 4
    cut = _weights(b, "cut.pth", lambda p: p.write_bytes(BUNDLED_WEIGHTS.read_bytes()[:5000]))
    return [Cmd(b.train_args(f"pretrained={hostile}"), ("hostile.pth", "holds objects other than tensors")),
            Cmd(b.train_args(f"pretrained={raw}"), ("raw.pth", "not a readable torch weights file")),
            Cmd(b.train_args(f"pretrained={cut}"), ("cut.pth", "not a readable torch weights file"))]


def _bad_pretrained_then(b):
    _hostile_then(b)
    assert all("weights_only=False" not in r.err for r in b.results)


def _junk_onnx(b):  # 7i
    w = _weights(b, "X.onnx", lambda p: p.write_bytes(np.random.default_rng(1).bytes(2048)))
    return Cmd(b.predict_args(b.photos(1), "--weights", w), ("X.onnx", "onnxruntime cannot load it"))


def _killed_mid_epoch(b):  # 8a (a kill -9 right after the last.pt of step 1 of epoch 0's 2)
    resumed(b, stopped_run(b, 1), "epoch 0, batch 1")


def _killed_at_epoch_ends(b):  # 8b
    import digitdet.train.fit as fit_module
    # after the last batch of epoch 0, before its validation and epoch-end save
    resumed(b, stopped_run(b, 2), "epoch 0, batch 2")
    # right after epoch 0's epoch-end save (the process dies there: an interrupt stands in for the kill)
    shutil.rmtree(b.tmp / "run")
    save = fit_module._save_last

    def save_then_die(run):
        save(run)
        if run.prog["epoch"] == 1 and run.prog["step_in_epoch"] == 0:
            raise KeyboardInterrupt

    with b.mp.context() as m:
        m.setattr(fit_module, "_save_last", save_then_die)
        assert b.run(*b.train_args(*RESUMED, tiny=[])).rc == 130
    resumed(b, b.tmp / "run", "epoch 1, batch 0")


def _resumed_metrics(b):  # 8c: the resumed epoch's loss columns are the whole epoch's
    run = stopped_run(b, 3)  # killed in epoch 1, after its first batch
    resumed(b, run, "epoch 1, batch 1")  # same_run compares metrics.csv, loss columns included
    rows = _metrics(run)
    assert len(rows) == 2 and all(float(r["loss"]) > 0 for r in rows)


def _killed_while_saving(b):  # 8d: the kill left half a temp file beside an intact last.pt
    run = stopped_run(b, 1)
    (run / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    resumed(b, run, "epoch 0, batch 1")
    assert "removed" in b.results[-1].log and ".last.pt.abc123.tmp" in b.results[-1].log


def _config_file(b, name: str, text: str) -> Path:
    p = b.tmp / name
    p.write_text(text)
    return p


def _settings(*settings_and_says):
    """Rows 9*: train with these settings (or argv pieces); each a variant."""
    def make(b):
        cmds = []
        for setting, says in settings_and_says:
            extra = setting(b) if callable(setting) else [setting] if isinstance(setting, str) else list(setting)
            cmds.append(Cmd(b.train_args(*extra), says))
        return cmds
    return make


def _config_files(b):  # 9i
    (b.tmp / "folder.yaml").mkdir()
    return [Cmd(b.train_args(config="nosuchrecipe"), ("nosuchrecipe", "no such file", "not a packaged recipe")),
            Cmd(b.train_args(config=b.tmp / "missing.yaml"), ("missing.yaml", "no such file")),
            Cmd(b.train_args(config=b.tmp / "folder.yaml"), ("folder.yaml",))]


BAD_YAML = {"bad.yaml": "anchor_sizes: [[12, 16\nlr: 0.1\n", "list.yaml": "- lr: 0.1\n", "wrongtype.yaml": "lr: abc\n"}


def _empty_config(b):  # 9l
    empty = _config_file(b, "empty.yaml", "# nothing yet\n")
    return Cmd(b.train_args(config=empty, tiny=ONE_STEP), ("empty.yaml sets nothing",), rc=0)


def _interrupted_predict(b):  # 10a: Ctrl-C while reading, and while writing the new set, into an OUT of results
    import digitdet.cli.predict as predict
    import digitdet.data.coco as coco
    import digitdet.read.stream as stream
    out, photos = b.tmp / "out", b.photos(3)
    assert b.run(*b.predict_args(photos)).rc == 0
    old = _digest(out)
    decode, write = stream.load_rgb_within, predict.write_results
    decoded = []

    def decode_then_interrupt(*a, **k):  # Ctrl-C while the 2nd photo is read
        decoded.append(1)
        if len(decoded) == 2:
            raise KeyboardInterrupt
        return decode(*a, **k)

    def write_then_interrupt(*a, **k):
        write(*a, **k)  # pred.json, pred.csv, pred_config.json and results.jsonl are written, not yet in place
        raise KeyboardInterrupt

    for backend in BACKENDS.values():
        for patches in ({(stream, "load_rgb_within"): decode_then_interrupt, (coco, "load_rgb_within"): decode_then_interrupt},
                        {(predict, "write_results"): write_then_interrupt}):
            decoded.clear()
            with b.mp.context() as m:
                for (module, name), stand_in in patches.items():
                    m.setattr(module, name, stand_in)
                r = b.run(*b.predict_args(photos, *backend))
            assert r.rc == 130 and r.err.count("\n") == 1, r
            assert "interrupted" in r.err and "--resume" not in r.err and "checkpoint" not in r.err, r.err
            assert _digest(out) == old, (backend, patches)  # the previous run's set, whole
            assert len(decoded) >= 2 or (predict, "write_results") in patches  # it was stopped while reading


def _interrupted_training(b):  # 10b: Ctrl-C in step 2 (last.pt of step 1 written), then --resume
    import digitdet.train.fit as fit_module
    step, calls = fit_module.train_step, []

    def interrupt_in_step_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return step(*a, **k)

    with b.mp.context() as m:
        m.setattr(fit_module, "train_step", interrupt_in_step_2)
        r = b.run(*b.train_args(*RESUMED, tiny=[]))
    assert r.rc == 130 and r.err.count("\n") == 1 and "interrupted" in r.err and "--resume" in r.err, r.err
    resumed(b, b.tmp / "run", "epoch 0, batch 1")


def _group_norm(b):  # gn: a checkpoint of digitdet < 0.2 whose backbone used GroupNorm (norm: gn)
    from torchvision.models import resnet18
    model, cfg = group_norm_model(b)
    plain = _weights(b, "gn.pt", lambda p: save_checkpoint(p, {"model": model.state_dict(), "config": cfg.to_dict()}))
    said = _weights(b, "gn_said.pt", lambda p: save_checkpoint(p, {"model": model.state_dict(),
                                                                   "config": {**cfg.to_dict(), "norm": "gn"}}))
    gn = lambda c: torch.nn.GroupNorm(next(g for g in (32, 16, 8, 4, 2, 1) if c % g == 0), c)  # noqa: E731
    classifier = _weights(b, "gn_backbone.pt", lambda p: torch.save(resnet18(num_classes=11, norm_layer=gn).state_dict(), p))
    photos = b.photos(1)
    return [Cmd(b.predict_args(photos, "--weights", plain), ("gn.pt", "GroupNorm", "backbone.body.bn1", "BatchNorm")),
            Cmd(b.predict_args(photos, "--weights", said), ("gn_said.pt", "norm='gn'")),
            Cmd(b.train_args(f"pretrained={plain}", out=b.tmp / "run1"), ("gn.pt", "GroupNorm", "BatchNorm")),
            Cmd(b.train_args(f"pretrained={said}", out=b.tmp / "run2"), ("gn_said.pt", "GroupNorm", "norm: gn")),
            Cmd(b.train_args(f"pretrained={classifier}", out=b.tmp / "run3"), ("gn_backbone.pt", "GroupNorm", "bn1")),
            Cmd(_as_last_pt(b, plain), ("last.pt", "GroupNorm", "BatchNorm"))]


# -- real signals, in a process of its own --

def _huge_photo_warning(b):  # 4a-warn
    cmds = _huge_photo(b)
    b.note["named"] = "7.jpg"
    return cmds


def _warnings_name_the_photo(b):
    unnamed = [w for r in b.results for w in r.warned if "DecompressionBomb" in w and b.note["named"] not in w]
    assert not unnamed, f"printed on stderr, naming no photo: {unnamed}"
    for r in b.results:  # each backend's run says it, by name
        assert f"{b.note['named']}: a very large photo" in r.log, r.log


def _hostile_says_what_it_holds(b):  # 7c-msg
    pwned = b.tmp / "PWNED"
    w = _weights(b, "hostile.pt", lambda p: torch.save({"model": Hostile(pwned), "config": {}}, p))
    return Cmd(b.predict_args(b.photos(1), "--weights", w), ("hostile.pt", "posix.system"))


def _raw_pickle_protocol_4(b):  # 7c-warn
    pwned = b.tmp / "PWNED"
    w = _weights(b, "raw.pt", lambda p: p.write_bytes(pickle.dumps({"model": Hostile(pwned), "config": {}})))
    return Cmd(b.predict_args(b.photos(1), "--weights", w), ("raw.pt", "cannot be loaded safely"))


def _digitdet_process(b, *argv, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(digitdet.__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-m", "digitdet", *map(str, argv)], cwd=b.tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _kill_9(b):  # 8a-real: kill -9 as soon as a last.pt is on disk, then --resume
    run = b.tmp / "run"
    proc = _digitdet_process(b, *b.train_args(*RESUMED, tiny=[]))
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    resumed(b, run, "epoch ")


def _sigint_predict(b):  # 10a-real: SIGINT once the reading has started, into an OUT of results
    out, photos = b.tmp / "out", b.tmp / "many"
    photos.mkdir()
    for i in range(1, 201):
        b.photo(1 + i % 6).save(photos / f"{i}.png")
    for name, text in (("pred.json", "[]\n"), ("pred.csv", "image_id,pred_label\n1,7\n"), ("pred_config.json", "{}\n")):
        out.mkdir(exist_ok=True)
        (out / name).write_text(text)
    old = _digest(out)
    proc = _digitdet_process(b, "predict", "--images", photos, "--out", out, "--batch-size", "2", "--workers", "0",
                             "--device", "cpu", "zoom_read=false")
    said = ""
    while "%|" not in said:  # the progress bar: the photos are being read
        c = proc.stderr.read(1)
        assert c, f"predict ended before reading: {said}"
        said += c
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = said + err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("digitdet")]
    assert proc.returncode == 130 and lines == ["digitdet predict: interrupted (files already written are intact; "
                                                "outputs are written whole or not at all)"], err
    assert "Traceback" not in err and _digest(out) == old


S = pytest.mark.slow
CASES = [
    # 1: broken photos in a training split
    Case("1a", "truncated PNG in DATA/train: was found mid-training (step 30 of 200), as a worker's traceback; "
         "now every photo is decoded when the dataset opens", _training_photo("truncated"),
         also="test_reliability.py::test_broken_training_photos_are_all_named_before_the_first_step"),
    Case("1b", "zero-byte .png in train (as 1a)", _training_photo("empty")),
    Case("1c", "text file renamed .png in train (as 1a)", _training_photo("text")),
    Case("1d", "1a with --workers 0 (was one line, but mid-training)", _training_photo("truncated", False)),
    Case("1e", "1a during backbone pre-training (pretrain_epochs=1): a progress bar despite --quiet, then the "
         "worker traceback", _pretraining_is_quiet, rc=None),
    # 2-4: photos to read
    Case("2", "truncated, zero-byte and text .png among the test photos: each named, read as -1, the rest read",
         _broken_test_photos, rc=0, then=_broken_test_photos_then),
    Case("3a", "RGBA (opaque), RGBA with transparent pixels (on white), LA",
         _variants(_modes, {2: (1, 0.7), 4: (3, 0.7), 6: (5, 0.7)}), rc=0, then=_read_alike),
    Case("3b", "16-bit grayscale PNG (I;16)", _variants(_sixteen_bit, {2: (1, 0.1)}), rc=0, then=_read_alike),
    Case("3c", "palette (P) PNG", _variants(_palette, {2: (1, 0.1)}), rc=0, then=_read_alike),
    Case("3d", "1-bit PNG, dithered and not: read without error (the picture itself is lost)",
         _variants(_one_bit, {}), rc=0, then=_one_bit_then),
    Case("3e", "CMYK JPEG", _variants(_cmyk, {2: (1, 0.1)}), rc=0, then=_read_alike),
    Case("3f", "EXIF orientation 6 (pixels stored turned): read upright, boxes in the upright frame",
         _variants(_exif_turned, {2: (1, 0.1), 4: (3, 1.0)}), rc=0, then=_read_alike),
    Case("3g", ".webp (lossless), .bmp", _variants(_webp_bmp, {2: (1, 0.1), 3: (1, 0.1)}), rc=0, then=_read_alike),
    Case("3h", ".tif, .tiff, .gif in the folder: were silently left out; now read",
         _variants(_tif_gif, {2: (1, 0.1), 3: (1, 0.1)}), rc=0, then=_tif_gif_then,
         also="test_reliability.py::test_tif_and_gif_photos_are_read_and_other_files_are_named"),
    Case("3i", "one .tif as --images: was 'not an image' (rc 2) when .tif was not read; now it is read",
         lambda b: Cmd(b.predict_args(_weights(b, "X.tif", lambda p: b.photo(1).save(p))), rc=0),
         then=lambda b: read_pred_csv(b.tmp / "out" / "pred.csv") == {1: b.truth()[1]}),
    Case("4a", "12000x12000 photo: read, but 6.3 GB; now read reduced to a 6,000-px side (scaled down here)",
         _huge_photo, rc=0, then=_huge_photo_then,
         also="test_reliability.py::test_a_huge_photo_is_read_reduced_and_its_boxes_come_back_in_its_pixels"),
    Case("4b", "decompression bomb among good photos: aborted the whole run with a traceback; now -1",
         _bomb, rc=0, then=_bomb_then,
         also="test_reliability.py::test_a_decompression_bomb_reads_minus_one_and_the_run_goes_on"),
    # 5: folders and --out
    Case("5a", "photo.jpg and 'front door.jpg' beside 3.png, 10.png: ids 11, 12, mapped in image_ids.csv",
         _names, rc=0, then=_names_then),
    Case("5b", "01.png and 1.png: one id", _same_id),
    Case("5c", "1.PNG, 2.JPG (upper-case suffixes)", _upper_case, rc=0,
         then=lambda b: set(read_pred_csv(b.tmp / "out" / "pred.csv")) == {1, 2}),
    Case("5d", "a nested folder: was ignored without a word; now named", _nested, rc=0,
         then=lambda b: set(read_pred_csv(b.tmp / "out" / "pred.csv")) == {1}),
    Case("5e", "empty test folder", lambda b: (b.tmp / "EMPTY").mkdir() or b.predict_args(b.tmp / "EMPTY"),
         says=("EMPTY", "no images")),
    Case("5f", "a folder that does not exist", lambda b: b.predict_args(b.tmp / "nosuchdir"),
         says=("nosuchdir", "no such folder")),
    Case("5g", "a text file where the folder is expected",
         lambda b: b.predict_args(_weights(b, "notes.txt", lambda p: p.write_text("hi"))), says=("notes.txt", "not an image")),
    Case("5h", "one .png as --images", lambda b: Cmd(b.predict_args(b.photos(1) / "1.png"), rc=0),
         then=lambda b: read_pred_csv(b.tmp / "out" / "pred.csv") == {1: b.truth()[1]}),
    Case("5i", "--out is an existing file: a traceback after the whole prediction; now before any work",
         lambda b: _out_is_a_file(b, "predict"),
         also="test_reliability.py::test_out_that_is_a_file_fails_before_any_work"),
    Case("5j", "--out on a read-only mount (a new subfolder, and the mount itself), simulated: EROFS from os.open "
         "and os.mkdir inside it", lambda b: _out_read_only(b, "predict")),
    Case("5k", "--out a chmod 555 folder (root: the EACCES a user gets, simulated)", _chmod_555),
    Case("5l", "train --out an existing file, or on a read-only mount (simulated)",
         lambda b: [_out_is_a_file(b, "train"), *_out_read_only(b, "train")]),
    # 6: annotations
    Case("6a", "train.json cut in half", lambda b: truncate(b.data() / "train.json") and b.train_args(data=b.data()),
         says=("train.json", "not valid JSON")),
    Case("6b", "category_id 0 / 11 / '3'",
         _variants_of(*[(lambda c, v=v: c["annotations"][0].__setitem__("category_id", v),
                         ("annotation id 1", f"category_id {v!r}")) for v in (0, 11, "3")])),
    Case("6c", "box of negative width: dropped, and said", _annotation(_set_bbox([10, 5, -8, 12]),
         "annotation id 1: box [10, 5, -8, 12] has no area inside", "dropped", rc=0), rc=0),
    Case("6d", "box entirely outside the image: dropped, and said", _annotation(_set_bbox([5000, 5000, 10, 10]),
         "annotation id 1: box [5000, 5000, 10, 10] has no area inside", "dropped", rc=0), rc=0),
    Case("6e", "box partly outside: clipped, and said", _annotation(_set_bbox([-5, -5, 20, 2000]),
         "annotation id 1: box [-5, -5, 20, 2000] lies partly outside", "clipped", rc=0), rc=0),
    Case("6f", "duplicate image id", _annotation(lambda c: c["images"][1].__setitem__("id", 1),
                                                 "duplicate image id 1", "1.png", "2.png")),
    Case("6g", "annotation of a missing image id", _annotation(lambda c: c["annotations"][0].__setitem__("image_id", 99999),
                                                               "annotation id 1", "image_id 99999")),
    Case("6h", "image in the JSON, missing on disk",
         lambda b: (b.data() / "train" / "5.png").unlink() or b.train_args(data=b.data()),
         says=("train.json", "image id 5", "5.png", "not found")),
    Case("6i", "extra photos on disk, not in the JSON: ignored (COCO's convention)", _extra_photo_on_disk, rc=0),
    Case("6j", "bbox holding a string: named neither file nor annotation; now both",
         _annotation(_set_bbox(["a", 1, 2, 3]), "annotation id 1", "bbox", "'a'"),
         also="test_reliability.py::test_bad_annotations_name_the_file_and_record"),
    Case("6k", "image id 'abc': named neither file nor record; now both",
         _annotation(lambda c: c["images"][0].__setitem__("id", "abc"), "1.png", "id must be an integer", "'abc'")),
    Case("6l", "NaN in a bbox: was kept and trained on ('clipped'); now refused",
         _annotation(_set_bbox([float("nan"), 1, 2, 3]), "annotation id 1", "four finite numbers", "nan")),
    Case("6m", "an annotation that is not an object (5): was an AttributeError traceback",
         _annotation(lambda c: c["annotations"].__setitem__(0, 5), "an annotation must be an object", "got 5")),
    Case("6n", "JSON width/height (5000x4000) not the file's: was silently accepted",
         _annotation(lambda c: c["images"][0].update(width=5000, height=4000), "image id 1", "5000x4000 in the JSON")),
    Case("6o", "top-level list, or no 'annotations' key",
         _variants_of((lambda c: [c], ("not a COCO file",)), (lambda c: c.pop("annotations") and None, ("not a COCO file",)))),
    # 7: weights files
    Case("7a", "truncated .pt as --weights", _truncated_pt),
    Case("7b", "random bytes, zero-byte .pt", _junk_pt),
    Case("7c", "hostile pickle (os.system) as a torch zip and a raw pickle, to predict and as last.pt to --resume: "
         "refused, never run", _hostile, then=_hostile_then),
    Case("7d", "hostile pickle calling eval, to predict and --resume", _evaluates),
    Case("7e", "an unrelated state dict (torchvision resnet18), to predict and --resume", _classifier_state),
    Case("7f", "a digitdet checkpoint of another architecture, or with a classifier's weights, to predict and "
         "--resume: was 2.3 KB of torch's key names", _other_architecture,
         also="test_reliability.py::test_a_checkpoint_whose_config_names_another_model_is_one_line"),
    Case("7g", "a checkpoint whose config is a string: was \"unknown config key(s) ['e', 'h', 'l', 'o']\"",
         _string_config),
    Case("7h", "pretrained= a hostile or a truncated file: was torch's traceback advising weights_only=False",
         _bad_pretrained, then=_bad_pretrained_then,
         also="test_reliability.py::test_a_bad_pretrained_file_is_one_line"),
    Case("7i", "random bytes as a .onnx", _junk_onnx),
    # 8: kills and resumes (a kill -9 right after a save leaves what fit(stop_after_steps=...) leaves)
    Case("8a", "killed mid-epoch (epoch 0, batch 1 of 2), then --resume: bit-identical to an uninterrupted run",
         _killed_mid_epoch, rc=None, also="test_train.py::test_resume_equals_uninterrupted_run (slow)"),
    Case("8b", "killed after the last batch before validation, and at an epoch end: bit-identical",
         _killed_at_epoch_ends, rc=None),
    Case("8c", "metrics.csv after a resumed epoch: its losses averaged only the batches after the resume",
         _resumed_metrics, rc=None),
    Case("8d", "killed while saving last.pt: the orphan .last.pt.*.tmp stayed; --resume now removes it",
         _killed_while_saving, rc=None,
         also="test_reliability.py::test_a_save_killed_midway_leaves_no_temp_file_behind"),
    # 9: settings
    Case("9a", "unknown key, on the command line and in a YAML file",
         _settings(("not_a_key=1", ("command-line override", "unknown config key(s) ['not_a_key']")),
                   (lambda b: ["--config", _config_file(b, "mine.yaml", "not_a_key: 1\n")],
                    ("mine.yaml", "unknown config key(s) ['not_a_key']"))), then=nothing_started),
    Case("9b", "lr=abc, seed=1.5, deterministic=maybe, noequals",
         _settings(("lr=abc", ("lr must be float", "'abc'")), ("seed=1.5", ("seed must be int", "1.5")),
                   ("deterministic=maybe", ("deterministic",)), ("noequals", ("'noequals'", "key=value"))),
         then=nothing_started),
    Case("9c", "batch_size=-4 (and --batch-size -4): was torch's message about -32",
         _settings(("batch_size=-4", ("batch_size must be > 0, got -4",)),
                   (["--batch-size", "-4"], ("batch_size must be > 0, got -4",))), then=nothing_started),
    Case("9d", "batch_size=0: was a ZeroDivisionError traceback", _settings(("batch_size=0", ("batch_size must be > 0",))),
         then=nothing_started, also="test_reliability.py::test_bad_settings_are_one_line_before_training"),
    Case("9e", "min_size=0: was a traceback at the first batch", _settings(("min_size=0", ("min_size must be > 0",))),
         then=nothing_started),
    Case("9f", "anchor_sizes='[[12' (bad YAML in an override): was yaml's traceback",
         _settings(("anchor_sizes=[[12", ("anchor_sizes=[[12", "not valid YAML"))), then=nothing_started),
    Case("9g", "lr=-1, lr=nan, workers=-1: were torch's messages without the key",
         _settings(("lr=-1", ("lr must be > 0",)), ("lr=nan", ("lr must be > 0", "nan")),
                   ("workers=-1", ("workers must be >= 0",)), (["--workers", "-1"], ("workers must be >= 0",))),
         then=nothing_started),
    Case("9h", "backbone=resnet999, optimizer=foo",
         _settings(("backbone=resnet999", ("backbone='resnet999'", "choose one of")),
                   ("optimizer=foo", ("optimizer='foo'", "choose one of"))), then=nothing_started),
    Case("9i", "--config nosuchrecipe, a missing .yaml, a folder", _config_files, then=nothing_started),
    Case("9j", "malformed YAML file: named the file, but in 5 lines; now one",
         lambda b: Cmd(b.train_args(config=_config_file(b, "bad.yaml", BAD_YAML["bad.yaml"])),
                       ("bad.yaml", "not valid YAML", "line 1, column 16"))),
    Case("9k", "YAML holding a list; a wrong type in YAML",
         lambda b: [Cmd(b.train_args(config=_config_file(b, n, BAD_YAML[n])), (n, says))
                    for n, says in (("list.yaml", "expected a mapping"), ("wrongtype.yaml", "lr must be float"))],
         then=nothing_started),
    Case("9l", "empty YAML file: silently trained with the defaults; now it says so", _empty_config, rc=0,
         also="test_reliability.py::test_an_empty_config_file_says_it_sets_nothing"),
    # 10: Ctrl-C
    Case("10a", "Ctrl-C during predict into an OUT of results (while reading, and while writing the new set): "
         "the old set stays whole; the message spoke of checkpoints and --resume", _interrupted_predict, rc=None),
    Case("10b", "Ctrl-C during train (step 2 of 4), then --resume: bit-identical", _interrupted_training, rc=None),
    # beyond the review's table
    Case("gn", "a checkpoint whose backbone used GroupNorm (digitdet < 0.2, norm: gn), to predict, as pretrained= "
         "(detector, and classifier) and as last.pt: was loaded into BatchNorm silently by pretrained=",
         _group_norm),
    # what remained of the review's notes after the table's first pass
    Case("4a-warn", "4a: Pillow's DecompressionBombWarning for a big photo, printed on stderr, names no photo",
         _huge_photo_warning, rc=0, then=_warnings_name_the_photo),
    Case("7c-msg", "7c: a pickle holding posix.system is said to be 'not a torch checkpoint'",
         _hostile_says_what_it_holds),
    Case("7c-warn", "7c: a raw pickle of Python's default protocol 4 as --weights: torch's UserWarning 'Detected "
         "pickle protocol 4' is printed on stderr beside the one-line error", _raw_pickle_protocol_4),
    Case("8a-real", "8a with a real kill -9 (a process of its own) as soon as a last.pt is on disk", _kill_9,
         rc=None, marks=(S,)),
    Case("10a-real", "10a with a real SIGINT (a process of its own) once the reading has started", _sigint_predict,
         rc=None, marks=(S,)),
]

# The review's rows, as its table numbers them: every one is a case above.
REVIEW_ROWS = (["1a", "1b", "1c", "1d", "1e", "2"] + [f"3{c}" for c in "abcdefghi"] + ["4a", "4b"]
               + [f"5{c}" for c in "abcdefghijkl"] + [f"6{c}" for c in "abcdefghijklmno"]
               + [f"7{c}" for c in "abcdefghi"] + [f"8{c}" for c in "abcd"] + [f"9{c}" for c in "abcdefghijkl"]
               + ["10a", "10b"])


assert len(REVIEW_ROWS) == 71 and set(REVIEW_ROWS) <= {c.id for c in CASES}, set(REVIEW_ROWS) - {c.id for c in CASES}
assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture
def bench(tmp_path, tiny_data, capsys, caplog, monkeypatch, tmp_path_factory):
    # A finished run draws its pictures (seconds each on 2 cores): no row is about them.
    monkeypatch.setattr("digitdet.train.fit._write_pictures", lambda *a, **k: None)
    return Bench(tmp_path, tiny_data, capsys, caplog, monkeypatch, tmp_path_factory)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_review_row(case: Case, bench: Bench):
    made = case.make(bench)
    if case.rc is not None:
        cmds = made if isinstance(made, list) and made and isinstance(made[0], Cmd) else [made]
        for cmd in cmds:
            cmd = cmd if isinstance(cmd, Cmd) else Cmd(cmd)
            r = bench.run(*cmd.argv)
            rc = case.rc if cmd.rc is None else cmd.rc
            check = user_error if rc == 2 else handled
            assert r.rc == rc, r
            check(r, *case.says, *cmd.says)
    if case.then is not None:
        assert case.then(bench) is not False
    bench.finish()
