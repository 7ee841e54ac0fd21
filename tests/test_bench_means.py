"""bench/other_means.py draws its test numbers as its docstring says (a bench that draws the
wrong thing measures the wrong thing: its plain 1s were once 1.45x as tall as their digits)."""
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import other_means  # noqa: E402


def test_strokes_bench_paints_its_1s_at_the_digits_height_and_fill():
    rng = np.random.default_rng(0)
    for _ in range(12):
        image, number, group, _ = other_means.draw_bare_ones(rng)
        ink = (cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) < 110).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(ink)
        heights = [h for _, _, _, h, area in stats[1:] if area > 30]
        assert len(heights) >= len(number)  # every glyph a blob of its own
        assert max(heights) - min(heights) <= 0.06 * max(heights) + 2, (number, heights)
        lo, hi = (float(v) for v in group.split()[1].split("-"))
        assert lo - 0.03 <= max(heights) / image.shape[0] <= hi + 0.03, (number, group, max(heights), image.shape)
