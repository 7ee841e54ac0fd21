"""Images per second of ``render_dataset`` (PNG writing included) with 1 and 2 workers.

    python bench/synth_speed.py --n 600

A first, untimed run fills this process's font and glyph caches (forked workers inherit
them), so the figures are the steady state of a long run such as ``make demo``'s 3,600
images. Other processes on the machine slow this down: read it on an idle machine.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

from digitdet.synth.render import render_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="training images per timed run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        render_dataset(f"{tmp}/warm", 300, 0, 0, seed=99, workers=1, progress=False)
        print(f"warm-up (cold caches): {300 / (time.perf_counter() - t):.0f} images/s")
        for workers in args.workers:
            s = render_dataset(f"{tmp}/w{workers}", args.n, 0, 0, seed=1, workers=workers, progress=False)
            print(f"workers={workers}: {s['images_per_s']:.0f} images/s ({args.n} images in {s['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
