"""What a digit dataset looks like, and the anchors that fit it.

* :func:`box_stats` -- digits per image, box sizes and shapes, image sizes, class counts.
* :func:`suggest_anchors` -- k-means anchor sizes per FPN level and aspect ratios, measured
  at the scale the model actually sees (after torchvision's resize).
* :func:`plot_stats` -- a one-page PNG of :func:`box_stats`.

All inputs are COCO digit dicts (``data/cocobuild.py``): bbox xywh in pixels of the original
image. Aspect ratios everywhere are torchvision's convention, ratio = HEIGHT / WIDTH, so a
digit (taller than wide) has a ratio > 1.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
from scipy.cluster.vq import kmeans2

from digitdet.labels import category_to_digit
from digitdet.viz.draw import new_figure, save_figure_atomic

PERCENTILES = (1, 10, 50, 90, 99)


def _percentiles(values) -> dict | None:
    """{"p1": ..., "p50": ..., "p99": ...} of ``values``, or None when there are none."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    return {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}


def _histogram(values, bins) -> dict:
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _box_arrays(coco: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(widths, heights, image index) of all boxes with positive size, in pixels."""
    index = {img["id"]: i for i, img in enumerate(coco["images"])}
    rows = [(a["bbox"][2], a["bbox"][3], index[a["image_id"]]) for a in coco["annotations"]
            if a["bbox"][2] > 0 and a["bbox"][3] > 0]
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return arr[:, 0], arr[:, 1], arr[:, 2].astype(int)


def box_stats(coco: dict) -> dict:
    """Summary statistics of a COCO digit dict (JSON-serialisable).

    Keys: ``n_images``, ``n_boxes``; ``digits_per_image`` {count: n_images} (0 included);
    ``digit_counts`` {digit 0..9: n_boxes}; percentiles (``p1 p10 p50 p90 p99``) of
    ``box_height``, ``box_width`` (pixels of the original image), ``hw_ratio`` (height /
    width), ``image_width``, ``image_height``; ``image_sizes`` {"WxH": n} for the 10 most
    common sizes; histograms (``edges``/``counts``) of height and ratio for plotting.
    Percentiles are None when there are no boxes.
    """
    widths, heights, _ = _box_arrays(coco)
    per_image = Counter(a["image_id"] for a in coco["annotations"])
    n_digits = Counter(per_image.get(img["id"], 0) for img in coco["images"])
    digits = Counter(category_to_digit(a["category_id"]) for a in coco["annotations"])
    sizes = Counter(f"{img['width']}x{img['height']}" for img in coco["images"])
    ratios = heights / np.maximum(widths, 1e-12)
    return {
        "n_images": len(coco["images"]),
        "n_boxes": len(coco["annotations"]),
        "digits_per_image": {int(k): n_digits[k] for k in sorted(n_digits)},
        "digit_counts": {d: digits.get(d, 0) for d in range(10)},
        "box_height": _percentiles(heights),
        "box_width": _percentiles(widths),
        "hw_ratio": _percentiles(ratios),
        "image_width": _percentiles([img["width"] for img in coco["images"]]),
        "image_height": _percentiles([img["height"] for img in coco["images"]]),
        "image_sizes": dict(sizes.most_common(10)),
        "height_hist": _histogram(heights, bins=30) if heights.size else None,
        "ratio_hist": _histogram(ratios, bins=30) if ratios.size else None,
    }


def resize_scales(coco: dict, min_size: int, max_size: int) -> np.ndarray:
    """Per-image scale of torchvision's ``GeneralizedRCNNTransform`` resize, in image order.

    scale = min(min_size / min(h, w), max_size / max(h, w)): the short side goes to
    ``min_size`` unless that would push the long side past ``max_size``.
    """
    if min_size <= 0 or max_size < min_size:
        raise ValueError(f"need 0 < min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    w = np.array([img["width"] for img in coco["images"]], dtype=np.float64)
    h = np.array([img["height"] for img in coco["images"]], dtype=np.float64)
    return np.minimum(min_size / np.minimum(h, w), max_size / np.maximum(h, w))


def _kmeans_1d(values: np.ndarray, k: int) -> np.ndarray:
    """Sorted k-means centres of 1-D ``values``; deterministic (starts at the quantiles)."""
    init = np.quantile(values, (np.arange(k) + 0.5) / k)
    centres, _ = kmeans2(values[:, None], init[:, None], minit="matrix", iter=50, missing="warn")
    return np.sort(centres[:, 0])


def _shape_iou(wh_boxes: np.ndarray, wh_anchors: np.ndarray) -> np.ndarray:
    """(N, M) IoU of boxes and anchors sharing a centre: how well each shape fits."""
    inter = (np.minimum(wh_boxes[:, None, 0], wh_anchors[None, :, 0])
             * np.minimum(wh_boxes[:, None, 1], wh_anchors[None, :, 1]))
    area_b = wh_boxes.prod(axis=1)[:, None]
    area_a = wh_anchors.prod(axis=1)[None, :]
    return inter / (area_b + area_a - inter)


def anchor_shapes(anchor_sizes, aspect_ratios) -> np.ndarray:
    """(K, 2) anchor (width, height) in px as torchvision's AnchorGenerator makes them.

    For size s and ratio r = h / w: h = s * sqrt(r), w = s / sqrt(r), so area = s**2.
    """
    sizes = np.array([s for level in anchor_sizes for s in level], dtype=np.float64)
    r = np.sqrt(np.asarray(aspect_ratios, dtype=np.float64))
    return np.stack([(sizes[:, None] / r[None, :]).ravel(), (sizes[:, None] * r[None, :]).ravel()], axis=1)


def anchor_fit(coco: dict, anchor_sizes, aspect_ratios, min_size: int, max_size: int) -> dict:
    """How well anchors cover the boxes at model input scale: the share of boxes whose best
    anchor (same centre) reaches IoU 0.5 / 0.7 (torchvision's RPN foreground threshold is
    0.7), and the median best IoU. Lets you compare a suggestion with the config's anchors."""
    widths, heights, img = _box_arrays(coco)
    if widths.size == 0:
        raise ValueError("anchor_fit: the COCO dict has no boxes")
    scale = resize_scales(coco, min_size, max_size)[img]
    best = _shape_iou(np.stack([widths * scale, heights * scale], 1),
                      anchor_shapes(anchor_sizes, aspect_ratios)).max(axis=1)
    return {"iou>=0.5": float((best >= 0.5).mean()), "iou>=0.7": float((best >= 0.7).mean()),
            "median_best_iou": float(np.median(best))}


def suggest_anchors(coco: dict, min_size: int, max_size: int, n_levels: int = 3,
                    k: int = 2, n_ratios: int = 3) -> dict:
    """Anchor sizes per FPN level and aspect ratios that fit the boxes of ``coco``.

    1. Scale every box by its image's torchvision resize (:func:`resize_scales`): anchors
       live in model-input pixels, not original pixels.
    2. Sizes: k-means on log sqrt(w * h) with ``n_levels * k`` centres, sorted and split
       into ``n_levels`` groups of ``k`` (smallest level first). sqrt(w*h), not the
       height, because torchvision's anchor of size s has area s**2 whatever its ratio.
    3. Ratios: k-means on log(h / w) with ``n_ratios`` centres, shared by every level
       (torchvision's RPN head needs the same number of anchors at each location).

    K-means starts from quantiles, so the result is deterministic. Returns
    ``anchor_sizes`` (list of ``n_levels`` lists of ``k`` ints, px at model input scale) and
    ``aspect_ratios`` (h / w, ascending) -- the names of the config fields -- plus
    ``scaled_height`` / ``scaled_hw_ratio`` percentiles and ``fit`` (:func:`anchor_fit`).
    Raises ValueError when there are fewer boxes than centres.
    """
    widths, heights, img = _box_arrays(coco)
    if min(n_levels, k, n_ratios) < 1:
        raise ValueError(f"n_levels, k and n_ratios must be >= 1, got {n_levels}, {k}, {n_ratios}")
    if widths.size < max(n_levels * k, n_ratios):
        raise ValueError(f"suggest_anchors: {widths.size} boxes is too few for "
                         f"{n_levels * k} size clusters and {n_ratios} ratio clusters")
    scale = resize_scales(coco, min_size, max_size)[img]
    w, h = widths * scale, heights * scale
    sizes = np.exp(_kmeans_1d(np.log(np.sqrt(w * h)), n_levels * k))
    ratios = np.exp(_kmeans_1d(np.log(h / w), n_ratios))
    anchor_sizes = [[int(round(s)) for s in sizes[i * k:(i + 1) * k]] for i in range(n_levels)]
    aspect_ratios = [round(float(r), 2) for r in ratios]
    return {"anchor_sizes": anchor_sizes, "aspect_ratios": aspect_ratios,
            "min_size": min_size, "max_size": max_size, "n_boxes": int(widths.size),
            "scaled_height": _percentiles(h), "scaled_hw_ratio": _percentiles(h / w),
            "fit": anchor_fit(coco, anchor_sizes, aspect_ratios, min_size, max_size)}


def plot_stats(stats: dict, out_png) -> None:
    """Draw :func:`box_stats` output as a 2x2 PNG (digits per image, digit classes, box
    height and h/w ratio histograms) and write it atomically to ``out_png``."""
    fig = new_figure(figsize=(10, 7))
    axes = fig.subplots(2, 2)
    bars = [(axes[0, 0], stats["digits_per_image"], "digits per image", "images"),
            (axes[0, 1], stats["digit_counts"], "digit class", "boxes")]
    for ax, counts, xlabel, ylabel in bars:
        ax.bar([str(c) for c in counts], list(counts.values()), color="tab:blue")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    hists = [(axes[1, 0], stats["height_hist"], "box height (px, original image)"),
             (axes[1, 1], stats["ratio_hist"], "box height / width")]
    for ax, hist, xlabel in hists:
        if hist is not None:
            edges = np.asarray(hist["edges"])
            ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color="tab:orange")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("boxes")
    fig.suptitle(f"{stats['n_images']} images, {stats['n_boxes']} digit boxes")
    save_figure_atomic(fig, out_png)
