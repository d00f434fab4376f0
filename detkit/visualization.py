"""Generic drawing for the analysis tools: boxes on an image coloured by a value, values binned by
another value, scatters with a curve; written as PNG files with matplotlib's Agg canvas (no display
and no pyplot state needed).

The binning helpers are pure numpy functions; the drawing helpers take numpy arrays (or anything
``np.asarray`` accepts, e.g. CPU tensors) and return a :class:`matplotlib.figure.Figure` or draw
on a given ``Axes``; :func:`save_figure` writes a figure.

:func:`dataset_samples` / :func:`draw_dataset_samples` (``tools/visualize_data.py``) show a config's
training images with their ground truth as the training loader sees them (after the
``dataloader.train`` mapper's augmentations) or as annotated, drawn by Detectron2's ``Visualizer``.
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
    "detectron2_visualizer",
    "DATA_SOURCES",
    "dataset_samples",
    "draw_dataset_samples",
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


# ---------------------------------------------------------------- Detectron2 Visualizer pictures


def detectron2_visualizer(image, boxes, metadata=None, scale: float = 1.0):
    """Detectron2's ``Visualizer`` on an (H, W, 3) uint8 RGB image, its label font no larger than
    ~0.3x the median side of ``boxes`` (N, 4) XYXY (its default grows with the image: 27 px on a
    2400-px image would hide 35-px tree crowns; never below 6 px)."""
    from detectron2.utils.visualizer import Visualizer

    vis = Visualizer(image, metadata, scale=scale)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes):
        side = float(np.median(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
        vis._default_font_size = min(vis._default_font_size, max(6.0, 0.3 * side * scale))
    return vis


#: What :func:`dataset_samples` shows: the training mapper's output, or the raw annotations.
DATA_SOURCES = ("dataloader", "annotation")


def _first_name(names) -> str:
    return names if isinstance(names, str) else list(names)[0]


def dataset_samples(cfg, num_images: int, source: str = "dataloader", seed: int = 0):
    """The first ``num_images`` images of the config's training set with their ground truth.

    Args:
        cfg: a LazyConfig with ``dataloader.train.dataset`` (and, for ``source="dataloader"``,
            ``dataloader.train.mapper``).
        source: ``"dataloader"``: each dataset dict through the config's training mapper (its
            random augmentations, e.g. the tree crowns' flips; numpy's RNG seeded with ``seed``),
            as the training loader feeds the model; ``"annotation"``: the image file and its
            annotations as stored.

    Returns:
        a list of ``(file_name, image (H, W, 3) uint8 RGB, boxes (G, 4) XYXY, classes (G,) int)``
        and the training dataset's metadata.
    """
    from detectron2.config import instantiate
    from detectron2.data import MetadataCatalog
    from detectron2.data.detection_utils import convert_image_to_rgb
    from detectron2.structures import BoxMode

    from .predict import read_rgb_image

    if source not in DATA_SOURCES:
        raise ValueError(f"--source {source!r}: choose one of {', '.join(DATA_SOURCES)}")
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"--num-images {num_images!r}: must be a whole number >= 1")
    train = cfg.get("dataloader", {}).get("train", None)
    if train is None or "dataset" not in train:
        raise KeyError("the config has no dataloader.train.dataset: nothing to show")
    if source == "dataloader" and train.get("mapper", None) is None:
        raise KeyError("the config has no dataloader.train.mapper; use --source annotation")
    dicts = instantiate(train.dataset)
    names = train.dataset.get("names", None)
    metadata = MetadataCatalog.get(_first_name(names)) if names is not None else None
    samples = []
    if source == "annotation":
        for d in dicts[:num_images]:
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d.get("annotations", [])]
            classes = [a["category_id"] for a in d.get("annotations", [])]
            samples.append((d["file_name"], read_rgb_image(d["file_name"]),
                            np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)))
        return samples, metadata
    mapper = instantiate(train.mapper)
    image_format = getattr(mapper, "image_format", "BGR")
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        for d in dicts[:num_images]:
            out = mapper(dict(d))
            image = convert_image_to_rgb(out["image"].permute(1, 2, 0).numpy(), image_format)
            inst = out.get("instances", None)
            boxes = inst.gt_boxes.tensor.numpy() if inst is not None else np.zeros((0, 4), np.float32)
            classes = inst.gt_classes.numpy() if inst is not None else np.zeros(0, np.int64)
            samples.append((d["file_name"], np.ascontiguousarray(image, dtype=np.uint8), boxes, classes))
    finally:
        np.random.set_state(state)
    return samples, metadata


def draw_dataset_samples(cfg, output: str, num_images: int, source: str = "dataloader", seed: int = 0) -> list:
    """Write :func:`dataset_samples` as PNGs ``output/<NNN>_<image name>.png`` (boxes and class
    names by Detectron2's Visualizer); returns their paths."""
    import os

    from PIL import Image

    samples, metadata = dataset_samples(cfg, num_images, source, seed)
    names = list(metadata.get("thing_classes", None) or []) if metadata is not None else []
    os.makedirs(output, exist_ok=True)
    written = []
    for i, (file_name, image, boxes, classes) in enumerate(samples):
        labels = [names[c] if 0 <= c < len(names) else str(c) for c in classes.tolist()]
        picture = detectron2_visualizer(image, boxes, metadata).overlay_instances(
            boxes=boxes, labels=labels or None
        ).get_image()
        path = os.path.join(output, f"{i:03d}_{os.path.splitext(os.path.basename(file_name))[0]}.png")
        Image.fromarray(picture).save(path)
        written.append(path)
    return written
