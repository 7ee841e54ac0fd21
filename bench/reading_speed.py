"""How fast the bundled reader starts, reads and how much memory it takes, per backend, on real photos.

    python bench/reading_speed.py                      # ../shared/data/svhn_real_dev/valid (else the renderer's)
    python bench/reading_speed.py --photos DIR --backends onnxruntime,torch --many 2000
    python bench/reading_speed.py --weights model_int8.onnx --backends onnxruntime   # another graph
    python bench/reading_speed.py --busy 2             # + default threads against --threads 1, 2 busy processes beside

Prints, for each backend:

* one photo, whole process: ``digitdet read PHOTO`` in a fresh process (start-up, model load,
  reading), median wall time of 3 runs and peak RSS;
* a folder, whole process: ``digitdet predict`` over ``--few`` (20) and ``--many`` (2,000)
  photos (the folder's photos repeated under new names), wall time, photos/s and peak RSS, and
  the ratio of the two peaks (flat memory: about 1);
* steady state, in one process after a warm-up, on ``--threads`` threads: model-only photos/s
  at batch 1 (one plain pass per photo, one at a time, every thread on it), the backend's own
  way (onnxruntime: ``threads`` photos at a time, one thread each; torch: batches of 32), and
  whole reading (zoom-in, second look: what ``predict`` does);
* the machine's fp32 GFLOP/s (numpy matmul, all cores) and the GFLOPs of one plain pass of the
  bundled model's architecture on a photo of the folder's median size (``torch.utils.flop_counter``),
  so both model-only rates are also printed as a fraction of what the cores could do;
* with ``--busy N``: ``predict`` over the folder with the default threads and with
  ``--threads 1`` while N processes spin on the CPU (a busy small machine).

Peak RSS is the ``digitdet`` process's; torch's DataLoader workers (folders of 64 photos or more)
are processes of their own, not counted. Photos of SVHN's size; the machine should be quiet (the
load average is printed). Without the
real photos it renders the renderer's test split (seed 0, 300 photos) and says so.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "svhn_real_dev" / "valid"


def measured(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, peak RSS MB, stdout) of ``cmd`` in a fresh process, run by a fresh Python helper
    whose RUSAGE_CHILDREN peak is that one command's."""
    helper = ("import resource, subprocess, sys, time, json; t = time.perf_counter(); "
              "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); w = time.perf_counter() - t; "
              "print(json.dumps({'rc': p.returncode, 'wall': w, 'out': p.stdout, 'err': p.stderr[-400:], "
              "'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")
    done = subprocess.run([sys.executable, "-c", helper, *cmd], capture_output=True, text=True, check=True)
    got = json.loads(done.stdout)
    if got["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({got['rc']}): {got['err'].strip()}")
    return got["wall"], got["rss"], got["out"]


def digitdet(*args: str) -> list[str]:
    return [sys.executable, "-m", "digitdet", *args]


def folder_of(photos: list[Path], n: int, root: Path) -> Path:
    """A folder of ``n`` photos: ``photos`` repeated (symbolic links named 1.png, 2.png, ...)."""
    folder = root / f"photos_{n}"
    folder.mkdir()
    for i in range(n):
        src = photos[i % len(photos)]
        (folder / f"{i + 1}{src.suffix}").symlink_to(src.resolve())
    return folder


def machine_gflops(seconds: float = 2.0) -> float:
    """fp32 GFLOP/s of a 1024 x 1024 matmul on every core numpy's BLAS uses (best of the runs)."""
    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * 1024 ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def model_gflops(height: int, width: int) -> float:
    """GFLOPs of one plain pass of the bundled model on a (height, width) photo (torch's flop counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from digitdet.read.detector import load_detector

    model, _, _ = load_detector(None, torch.device("cpu"))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model([torch.rand(3, height, width)])
    return counter.get_total_flops() / 1e9


def rate(step, items: list, seconds: float) -> float:
    """Photos/s of ``step(items)`` (a list in, all read), best of the windows in ``seconds``, after a warm-up."""
    step(items[:8])
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        step(items)
        best = max(best, len(items) / (time.perf_counter() - t0))
    return best


def steady(backend: str, weights: str | None, photos: list[Path], threads: int, seconds: float) -> dict:
    """Model-only and whole-reading photos/s in this process (module docstring)."""
    from digitdet.data.images import load_rgb
    from digitdet.read.stream import photo_array, read_stream

    images = [load_rgb(p) for p in photos]
    arrays = [photo_array(im) for im in images]
    if backend == "onnxruntime":
        from digitdet.read.onnx import load_onnx_detector
        from digitdet.read.zoom import reading_detector

        detector, cfg, _ = load_onnx_detector(weights, threads)
        many = detector.parallel()
        reading = reading_detector(many, cfg, None)
        one = lambda xs: [detector([x]) for x in xs]  # noqa: E731
        own = lambda xs: read_stream(many, list(enumerate(xs)), workers=threads)  # noqa: E731
        whole = lambda xs: read_stream(reading, list(enumerate(xs)), workers=threads)  # noqa: E731
        return {"model_batch1": rate(one, arrays, seconds), "model_own": rate(own, arrays, seconds),
                "own": f"{threads} photos at a time", "reading": rate(whole, images, seconds)}
    import torch

    from digitdet.api import Reader
    from digitdet.read.detect import model_detections

    torch.set_num_threads(threads)
    reader = Reader(weights, "cpu", threads, backend="torch")
    tensors = [torch.from_numpy(a) for a in arrays]
    device = torch.device("cpu")
    with torch.inference_mode():
        one = lambda xs: [model_detections(reader.model, [x], device) for x in xs]  # noqa: E731
        batched = lambda xs: [model_detections(reader.model, xs[i:i + 32], device)  # noqa: E731
                              for i in range(0, len(xs), 32)]
        by_shape = sorted(tensors, key=lambda t: t.shape[-1] / t.shape[-2])  # as predict groups photos by shape
        return {"model_batch1": rate(one, tensors, seconds), "model_own": rate(batched, by_shape, seconds),
                "own": "batches of 32", "reading": rate(lambda xs: reader.read_opened([(x, None) for x in xs]),
                                                         images, seconds)}


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, help=f"folder of photos (default: {REAL}, else the renderer's test split)")
    p.add_argument("--weights", help="model to time (default: the bundled one; a .onnx for onnxruntime only)")
    p.add_argument("--backends", default="onnxruntime,torch")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads for steady state")
    p.add_argument("--few", type=int, default=20)
    p.add_argument("--many", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=4.0, help="time per steady-state measurement")
    p.add_argument("--busy", type=int, default=0, help="also time predict beside this many spinning processes")
    args = p.parse_args(argv)
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = args.photos or (REAL if REAL.is_dir() else None)
        if folder is None:
            subprocess.run(digitdet("synth", "--out", str(root / "S"), "--train", "0", "--valid", "0", "--test", "300",
                                    "--seed", "0", "--workers", "2"), check=True, capture_output=True)
            folder = root / "S" / "test"
            print(f"no real photos at {REAL}: the renderer's test split (seed 0, 300 photos) instead")
        from digitdet.data.images import image_size, list_images

        photos = [path for _, path in list_images(folder)]
        sizes = [image_size(path) for path in photos]
        w, h = (int(statistics.median(s[i] for s in sizes)) for i in (0, 1))
        print(f"{len(photos)} photos of {folder}, median {w} x {h} px; {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.2f}")
        gflops_machine = machine_gflops()
        gflops_photo = model_gflops(h, w)
        print(f"machine: {gflops_machine:.0f} fp32 GFLOP/s (numpy matmul); model: {gflops_photo:.2f} GFLOPs "
              f"a plain pass on a {w} x {h} photo")
        few, many = folder_of(photos, args.few, root), folder_of(photos, args.many, root)
        weights = ["--weights", args.weights] if args.weights else []
        rows = []
        for backend in backends:
            one = [measured(digitdet("read", str(photos[0]), "--backend", backend, *weights)) for _ in range(3)]
            row = {"backend": backend, "one_photo_s": statistics.median(r[0] for r in one),
                   "one_photo_mb": max(r[1] for r in one)}
            for name, dirpath, n in (("few", few, args.few), ("many", many, args.many)):
                wall, rss, _ = measured(digitdet("predict", "--images", str(dirpath), "--out", str(root / f"o_{name}"),
                                                 "--quiet", "--backend", backend, *weights))
                row.update({f"{name}_s": wall, f"{name}_per_s": n / wall, f"{name}_mb": rss})
            row.update(steady(backend, args.weights, photos, args.threads, args.seconds))
            row["fraction_of_machine"] = row["model_batch1"] * gflops_photo / gflops_machine
            row["fraction_own"] = row["model_own"] * gflops_photo / gflops_machine
            if args.busy:
                stop = mp.Event()
                spinners = [mp.Process(target=_spin, args=(stop,)) for _ in range(args.busy)]
                for s in spinners:
                    s.start()
                try:
                    for label, extra in (("busy_default_s", []), ("busy_threads1_s", ["--threads", "1"])):
                        row[label] = measured(digitdet("predict", "--images", str(folder), "--out", str(root / "o_b"),
                                                       "--quiet", "--backend", backend, *weights, *extra))[0]
                finally:
                    stop.set()
                    for s in spinners:
                        s.join()
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
        print()
        print(f"| backend | one photo (whole process) | {args.few} photos | {args.many} photos | peak RSS "
              f"{args.many} / {args.few} | model-only photos/s, batch 1 | model-only, own way | whole reading "
              f"photos/s | model-only x GFLOPs / machine GFLOP/s: batch 1, own way |"
              + (" busy: default / --threads 1 |" if args.busy else ""))
        print("|---|---|---|---|---|---|---|---|---|" + ("---|" if args.busy else ""))
        for r in rows:
            print(f"| {r['backend']} | {r['one_photo_s']:.2f} s, {r['one_photo_mb']:.0f} MB | {r['few_s']:.2f} s, "
                  f"{r['few_mb']:.0f} MB | {r['many_s']:.1f} s ({r['many_per_s']:.0f}/s), {r['many_mb']:.0f} MB | "
                  f"{r['many_mb'] / r['few_mb']:.2f} | {r['model_batch1']:.0f} | {r['model_own']:.0f} ({r['own']}) | "
                  f"{r['reading']:.0f} | {r['fraction_of_machine']:.2f}, {r['fraction_own']:.2f} |"
                  + (f" {r['busy_default_s']:.1f} s / {r['busy_threads1_s']:.1f} s |" if args.busy else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
