"""Generic drawing for the analysis tools: boxes on an image coloured by a value, values binned by
another value, scatters with a curve; written as PNG files with matplotlib's Agg canvas (no display
and no pyplot state needed).

The binning helpers are pure numpy functions; the drawing helpers take numpy arrays (or anything
``np.asarray`` accepts, e.g. CPU tensors) and return a :class:`matplotlib.figure.Figure` or draw
on a given ``Axes``; :func:`save_figure` writes a figure.
"""
import os
from typing import Dict, Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import PolyCollection
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

__all__ = [
    "assign_bins",
    "bin_labels",
    "share_by_bin",
    "save_figure",
    "value_norm",
    "draw_boxes_by_value",
    "boxes_on_image_figure",
    "grouped_bars",
    "box_plot_by_bin",
]


def assign_bins(values, edges: Sequence[float]) -> np.ndarray:
    """Bin index of each value: bin ``i`` is ``[edges[i], edges[i+1])``, the last bin is closed
    (``[edges[-2], edges[-1]]``); values outside ``[edges[0], edges[-1]]`` (or NaN) get -1.

    Args:
        values: (N,) numbers.
        edges: (B + 1,) strictly increasing.
    Returns:
        (N,) int64 in {-1, 0, ..., B - 1}.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"assign_bins: edges must be >= 2 strictly increasing numbers, got {edges.tolist()}")
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = len(edges) - 2
    index[(values < edges[0]) | (values > edges[-1]) | np.isnan(values)] = -1
    return index.astype(np.int64)


def bin_labels(edges: Sequence[float], fmt: str = "{:.1f}") -> list:
    """``["[0.5, 0.6)", ..., "[0.9, 1.0]"]`` for :func:`assign_bins`' bins."""
    edges = list(edges)
    labels = [f"[{fmt.format(a)}, {fmt.format(b)})" for a, b in zip(edges[:-2], edges[1:-1])]
    return labels + [f"[{fmt.format(edges[-2])}, {fmt.format(edges[-1])}]"]


def share_by_bin(bin_index, amounts, num_bins: int) -> np.ndarray:
    """Percentage of the total of ``amounts`` that falls into each bin (rows with bin -1 count in
    the total but in no bin). (N,), (N,) -> (num_bins,); all zeros if the total is 0."""
    bin_index = np.asarray(bin_index).reshape(-1)
    amounts = np.asarray(amounts, dtype=np.float64).reshape(-1)
    if bin_index.shape != amounts.shape:
        raise ValueError(f"share_by_bin: {bin_index.shape} bin indices for {amounts.shape} amounts")
    total = amounts.sum()
    inside = bin_index >= 0
    sums = np.bincount(bin_index[inside], weights=amounts[inside], minlength=num_bins)[:num_bins]
    return 100.0 * sums / total if total > 0 else np.zeros(num_bins)


def save_figure(fig: Figure, path: str, dpi: int = 90) -> str:
    """Write ``fig`` as PNG to ``path`` (creating its folder) and return ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _box_polygons(boxes: np.ndarray) -> np.ndarray:
    """(B, 4) XYXY -> (B, 4, 2) rectangle corners."""
    x0, y0, x1, y1 = boxes.T
    return np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1), np.stack([x0, y1], 1)], 1)


def value_norm(values, vmin=None, vmax=None, center=None) -> Normalize:
    """The colour scale for ``values``: ``[vmin, vmax]`` (default the values' range), linear, or
    linear on each side of ``center`` (``TwoSlopeNorm``) when ``center`` lies strictly inside."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    vmin = float(values.min()) if vmin is None and len(values) else vmin
    vmax = float(values.max()) if vmax is None and len(values) else vmax
    if center is not None and vmin is not None and vmax is not None and vmin < center < vmax:
        return TwoSlopeNorm(vcenter=center, vmin=vmin, vmax=vmax)
    return Normalize(vmin=vmin, vmax=vmax)


def draw_boxes_by_value(ax, boxes, values, cmap: str = "viridis", vmin=None, vmax=None, linewidth: float = 0.8,
                        alpha: float = 0.9, center: Optional[float] = None) -> PolyCollection:
    """Draw XYXY ``boxes`` (B, 4) as unfilled rectangles whose edge colour maps ``values`` (B,)
    through ``cmap`` on :func:`value_norm`'s scale. The boxes whose values lie farthest from
    ``center`` (default: the highest values) are drawn on top. Returns the collection (a mappable
    for ``fig.colorbar``)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(boxes) != len(values):
        raise ValueError(f"draw_boxes_by_value: {len(boxes)} boxes but {len(values)} values")
    order = np.argsort(values if center is None else np.abs(values - center), kind="stable")
    norm = value_norm(values, vmin, vmax, center)
    collection = PolyCollection(
        _box_polygons(boxes[order]), closed=True, facecolors="none", linewidths=linewidth, alpha=alpha,
        cmap=colormaps[cmap], norm=norm,
    )
    collection.set_array(values[order])  # facecolor "none": the values colour the edges
    ax.add_collection(collection)
    return collection


def boxes_on_image_figure(
    image,
    boxes,
    values,
    gt_boxes=None,
    title: str = "",
    colorbar_label: str = "",
    cmap: str = "viridis",
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    linewidth: float = 0.8,
    size_inches: float = 7.0,
    region: Optional[Sequence[float]] = None,
    grey_background: bool = True,
    gt_color: str = "cyan",
    center: Optional[float] = None,
) -> Figure:
    """An image (H, W, 3) uint8 RGB with ``boxes`` coloured by ``values`` (a colour bar beside it)
    and the ground-truth boxes ``gt_boxes`` (G, 4) drawn as dashed ``gt_color`` rectangles on top.

    Args:
        region: ``(x0, y0, x1, y1)`` pixels to show (default the whole image); boxes are clipped.
        grey_background: show the image desaturated and lightened, so that coloured boxes stand
            out (and the PNG stays small).
        center: see :func:`value_norm` (e.g. 1 for weights: below and above 1 in two colours).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"boxes_on_image_figure: expected an (H, W, 3) image, got {image.shape}")
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (0, 0, width, height) if region is None else region
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"boxes_on_image_figure: region {tuple(region)} is not inside the {width}x{height} image")
    fig = Figure(figsize=(size_inches * 1.15, size_inches * (y1 - y0) / (x1 - x0)))
    ax = fig.add_subplot()
    if grey_background:
        grey = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        ax.imshow(grey, cmap="gray", vmin=-100, vmax=355)
    else:
        ax.imshow(image)
    mappable = draw_boxes_by_value(ax, boxes, values, cmap, vmin, vmax, linewidth, center=center)
    if gt_boxes is not None and len(gt_boxes):
        gt = PolyCollection(
            _box_polygons(np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)), closed=True,
            facecolors="none", edgecolors=gt_color, linewidths=1.4, linestyles="--",
        )
        ax.add_collection(gt)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02).set_label(colorbar_label)
    return fig


def grouped_bars(ax, group_labels: Sequence[str], series: Dict[str, Sequence[float]], ylabel: str = "",
                 value_fmt: Optional[str] = "{:.0f}"):
    """Bars of several series side by side per group (e.g. the share of loss per IoU bin for
    several models / weightings); each bar labelled with ``value_fmt`` unless it is None."""
    num_groups, num_series = len(group_labels), len(series)
    width = 0.8 / max(num_series, 1)
    x = np.arange(num_groups)
    for i, (name, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=np.float64)
        if len(values) != num_groups:
            raise ValueError(f"grouped_bars: series {name!r} has {len(values)} values for {num_groups} groups")
        bars = ax.bar(x + (i - (num_series - 1) / 2) * width, values, width, label=name)
        if value_fmt is not None:
            ax.bar_label(bars, labels=[value_fmt.format(v) for v in values], fontsize=6, padding=1)
    ax.set_xticks(x, group_labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def box_plot_by_bin(ax, values, bin_index, group_labels: Sequence[str], ylabel: str = "", log: bool = False):
    """Box plots (median, quartiles, 1.5 IQR whiskers, no fliers) of ``values`` per bin
    (``bin_index`` from :func:`assign_bins`), with each bin's count under its label."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    bin_index = np.asarray(bin_index).reshape(-1)
    data = [values[bin_index == b] for b in range(len(group_labels))]
    positions = [b + 1 for b, d in enumerate(data) if len(d)]
    if positions:
        ax.boxplot([d for d in data if len(d)], positions=positions, showfliers=False, widths=0.6)
    ax.set_xticks(range(1, len(group_labels) + 1), [f"{lab}\nn={len(d)}" for lab, d in zip(group_labels, data)],
                  fontsize=7)
    ax.set_xlim(0.4, len(group_labels) + 0.6)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
