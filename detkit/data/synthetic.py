"""A seeded, procedurally generated detection dataset whose boxes are poor descriptions of objects.

Every image is a noisy textured background with a few objects of three classes
(:data:`SYNTHETIC_CLASSES`) drawn over it, each a plain colour plus pixel noise:

* ``blob``: an irregular star-shaped polygon with random radii, so its box holds a lot of
  background between the spikes;
* ``stick``: a thin bar at 20-70 degrees from the axes, so its box is mostly background;
* ``ring``: an annulus or a crescent, so the centre of its box is background (or the hole).

The annotation of each object is the tight axis-aligned box of the pixels of its *whole* shape
(:func:`mask_to_box`), which is exact, yet still a noisy label in the sense of the CleanAnchors
(noisy anchors) and SWN (sample weighting) papers: many anchors that match a box well lie mostly
on background or on another object. The noise comes from

1. the shapes themselves (a box is a bad fit for blobs, sticks and rings);
2. occlusion: objects are drawn in order and later ones cover earlier ones; the box of a partly
   covered object is still its full (amodal) extent, so it contains pixels of the occluder;
3. missing labels: an object with less than :data:`MIN_VISIBLE_FRACTION` of its pixels left
   visible is not annotated, though its visible sliver stays in the image;
4. un-annotated clutter: short lines and dots in the objects' colours, drawn on the background
   before the objects (clutter never covers an object);
5. a background of smooth random texture plus per-pixel Gaussian noise over the whole image.

Shapes are clipped by the image border; boxes then cover the in-image part only, so every box
lies inside the image. Boxes are absolute XYXY pixel edges: a shape whose leftmost pixel column is
``c0`` and rightmost ``c1`` has ``x0 = c0`` and ``x1 = c1 + 1`` (so ``x1 - x0`` counts columns).

Generation is a pure function of its arguments (one ``np.random.default_rng(seed)``, no global
random state): the same seed gives bit-identical images and boxes. Change
:data:`GENERATOR_VERSION` whenever the drawing changes, so that cached datasets are rebuilt.
"""
import functools
import logging
import os
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .coco_files import (
    cache_root,
    coco_dict,
    params_key,
    register_generated_coco,
    save_image_atomic,
    write_json_atomic,
)

__all__ = [
    "SYNTHETIC_CLASSES",
    "GENERATOR_VERSION",
    "MIN_VISIBLE_FRACTION",
    "mask_to_box",
    "generate_synthetic_images",
    "prepare_synthetic",
    "register_synthetic",
    "register_all_synthetic",
]

logger = logging.getLogger(__name__)

SYNTHETIC_CLASSES = ("blob", "stick", "ring")
GENERATOR_VERSION = 1
MIN_VISIBLE_FRACTION = 0.2
"""Objects with a smaller fraction of their pixels left visible after occlusion get no box."""

_BLOB, _STICK, _RING = range(3)
_MIN_SIZE, _MAX_SIZE = 12.0, 80.0  # object diameter in pixels for a 128 px image (scales with it)


def mask_to_box(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """Tight box of the True pixels of a (H, W) bool mask, as int ``(x0, y0, x1, y1)`` with
    exclusive ``x1, y1`` (pixel edges). Raises ValueError for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_to_box: the mask is empty")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _upsample_linear(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Linearly interpolate the samples of ``a`` along ``axis`` to ``n`` evenly spaced points
    (elementwise arithmetic only, so the result does not depend on the BLAS build)."""
    m = a.shape[axis]
    pos = np.linspace(0, m - 1, n)
    i0 = np.minimum(np.floor(pos).astype(int), m - 2)
    shape = [1] * a.ndim
    shape[axis] = n
    t = (pos - i0).reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - t) + np.take(a, i0 + 1, axis=axis) * t


def _smooth_noise(rng, h: int, w: int, cells: int, std: float) -> np.ndarray:
    """(h, w, 3) texture: a coarse Gaussian grid of about ``cells`` cells a side, bilinearly
    upsampled."""
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    grid = rng.normal(0.0, std, (gh, gw, 3))
    return _upsample_linear(_upsample_linear(grid, h, axis=0), w, axis=1)


def _object_colour(rng, background: np.ndarray) -> np.ndarray:
    """An RGB colour that differs from the background's mean colour by 60+ in some channel."""
    for _ in range(8):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - background).max() >= 60:
            break
    return colour


def _shape_mask(rng, cls: int, cx: float, cy: float, size: float, h: int, w: int) -> np.ndarray:
    """(h, w) bool mask of one object of class ``cls`` and diameter ``size`` centred at (cx, cy)."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    r = size / 2
    if cls == _BLOB:
        k = int(rng.integers(6, 14))
        jitter = rng.uniform(-0.3, 0.3, k)
        angles = (np.arange(k) + jitter) * (2 * np.pi / k) + rng.uniform(0, 2 * np.pi)
        radii = r * rng.uniform(0.25, 1.0, k)
        draw.polygon(list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles))), fill=255)
    elif cls == _STICK:
        angle = np.deg2rad(rng.uniform(20, 70) + 90 * rng.integers(2))
        half_width = max(1.0, size * rng.uniform(0.03, 0.07))
        d = np.array([np.cos(angle), np.sin(angle)]) * r
        n = np.array([-np.sin(angle), np.cos(angle)]) * half_width
        c = np.array([cx, cy])
        corners = [c + d + n, c + d - n, c - d - n, c - d + n]
        draw.polygon([tuple(p) for p in corners], fill=255)
    else:  # ring: an (elliptic) annulus or a crescent
        rx, ry = r, r * rng.uniform(0.6, 1.0)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        if rng.random() < 0.5:
            t = rng.uniform(0.2, 0.45) * ry
            draw.ellipse([cx - rx + t, cy - ry + t, cx + rx - t, cy + ry - t], fill=0)
        else:
            a, off = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.4) * r
            ix, iy = cx + off * np.cos(a), cy + off * np.sin(a)
            draw.ellipse([ix - 0.85 * rx, iy - 0.85 * ry, ix + 0.85 * rx, iy + 0.85 * ry], fill=0)
    return np.asarray(canvas) > 0


def _generate_one(rng, h: int, w: int, max_objects: int):
    """One image: (PIL RGB image, list of (class_id, x0, y0, x1, y1), (N, h, w) bool masks)."""
    scale = min(h, w) / 128
    background = rng.uniform(40, 215, 3)
    img = background + _smooth_noise(rng, h, w, 5, 20.0) + _smooth_noise(rng, h, w, 24, 8.0)
    num_objects = int(rng.integers(1, max_objects + 1))
    colours = [_object_colour(rng, background) for _ in range(num_objects)]

    # Clutter in the objects' colours, on the background only.
    canvas = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(round(int(rng.integers(4, 13)) * scale**2)):
        colour = colours[int(rng.integers(num_objects))] + rng.normal(0, 15, 3)
        fill = tuple(int(v) for v in np.clip(np.rint(colour), 0, 255))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.6:
            length, a = rng.uniform(3, 10) * scale, rng.uniform(0, np.pi)
            end = (x + length * np.cos(a), y + length * np.sin(a))
            draw.line([(x, y), end], fill=fill, width=int(rng.integers(1, 3)))
        else:
            rd = rng.uniform(0.5, 2.5) * scale
            draw.ellipse([x - rd, y - rd, x + rd, y + rd], fill=fill)
    img = np.asarray(canvas, dtype=np.float64).copy()

    # Objects, later ones occluding earlier ones; `owner` holds the index of the visible object.
    owner = np.full((h, w), -1, dtype=np.int32)
    classes, masks = [], []
    for k in range(num_objects):
        cls = int(rng.integers(len(SYNTHETIC_CLASSES)))
        size = float(np.exp(rng.uniform(np.log(_MIN_SIZE), np.log(_MAX_SIZE)))) * scale
        margin = 0.3 * size  # the centre stays inside; up to ~20% of the diameter may be clipped
        cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
        mask = _shape_mask(rng, cls, cx, cy, size, h, w)
        img[mask] = colours[k]
        owner[mask] = k
        classes.append(cls)
        masks.append(mask)
    img += rng.normal(0, 6.0, img.shape)
    image = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")

    visible = np.bincount(owner.ravel() + 1, minlength=num_objects + 1)[1:]
    boxes, kept = [], []
    for k, (cls, mask) in enumerate(zip(classes, masks)):
        area = int(mask.sum())
        if area == 0 or visible[k] < MIN_VISIBLE_FRACTION * area:
            continue
        boxes.append((cls,) + mask_to_box(mask))
        kept.append(mask)
    kept = np.stack(kept) if kept else np.zeros((0, h, w), dtype=bool)
    return image, boxes, kept


def _iter_images(num_images: int, image_size: Tuple[int, int], seed: int, max_objects: int):
    """Yield ``(image, boxes, masks)`` for each image (see :func:`generate_synthetic_images`)."""
    h, w = (int(v) for v in image_size)
    if num_images < 0 or max_objects < 1 or min(h, w) < 32:
        raise ValueError(
            f"synthetic images need num_images >= 0, max_objects >= 1 and sides >= 32 px; got "
            f"num_images={num_images}, max_objects={max_objects}, image_size={image_size}"
        )
    rng = np.random.default_rng(seed)
    for _ in range(num_images):
        yield _generate_one(rng, h, w, max_objects)


def generate_synthetic_images(
    num_images: int,
    image_size: Tuple[int, int] = (128, 128),
    seed: int = 0,
    max_objects: int = 8,
    return_masks: bool = False,
) -> List[Tuple]:
    """Generate the synthetic images and their boxes (see the module docstring).

    Args:
        num_images: number of images.
        image_size: (H, W) in pixels; object sizes (12-80 px at 128 px) scale with ``min(H, W)``.
        seed: seed of the ``np.random.default_rng`` that all randomness comes from.
        max_objects: each image has 1..max_objects drawn objects (fewer may be annotated).
        return_masks: also return the object masks.

    Returns:
        list of ``(image, boxes)``: ``image`` a PIL RGB image of size (W, H); ``boxes`` a list of
        ``(class_id, x0, y0, x1, y1)`` ints, class_id indexing :data:`SYNTHETIC_CLASSES` and the box
        in absolute XYXY pixel edges. With ``return_masks``, ``(image, boxes, masks)`` where
        ``masks`` is an (N, H, W) bool array of the whole (occluded parts included) shape of each
        of the N annotated objects, in the order of ``boxes``.
    """
    out = []
    for image, boxes, masks in _iter_images(num_images, image_size, seed, max_objects):
        out.append((image, boxes, masks) if return_masks else (image, boxes))
    return out


def prepare_synthetic(
    folder: str, num_images: int, image_size: Tuple[int, int], seed: int, max_objects: int
) -> None:
    """Write ``folder/images/{i:05d}.png`` and then, last, ``folder/coco.json`` (COCO json with
    1-based image and category ids, XYWH boxes) for :func:`generate_synthetic_images`."""
    logger.info(f"Generating {num_images} synthetic images of size {tuple(image_size)} in {folder}")
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    images, annotations = [], []
    for i, (image, boxes, _) in enumerate(_iter_images(num_images, image_size, seed, max_objects)):
        file_name = f"{i:05d}.png"
        save_image_atomic(image, os.path.join(folder, "images", file_name))
        images.append(
            {"id": i + 1, "file_name": file_name, "width": image.width, "height": image.height}
        )
        for cls, x0, y0, x1, y1 in boxes:
            bbox = [x0, y0, x1 - x0, y1 - y0]
            annotations.append({"image_id": i + 1, "bbox": bbox, "category_id": cls})
    coco = coco_dict(images, annotations, SYNTHETIC_CLASSES)
    write_json_atomic(coco, os.path.join(folder, "coco.json"))


def register_synthetic(
    name: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = (128, 128),
    max_objects: int = 8,
) -> str:
    """Register ``name`` in Detectron2's catalogs; the images are generated on first load into
    ``$DETKIT_CACHE/synthetic/{name}-{hash of the parameters}``. Returns that folder."""
    params = {
        "generator_version": GENERATOR_VERSION,
        "num_images": int(num_images),
        "seed": int(seed),
        "image_size": [int(v) for v in image_size],
        "max_objects": int(max_objects),
    }
    folder = os.path.join(cache_root(), "synthetic", f"{name}-{params_key(params)}")
    prepare = functools.partial(
        prepare_synthetic,
        num_images=num_images,
        image_size=tuple(image_size),
        seed=seed,
        max_objects=max_objects,
    )
    register_generated_coco(name, folder, prepare, SYNTHETIC_CLASSES)
    return folder


_BUILTIN_SYNTHETIC = {
    # name: (num_images, seed, image_size)
    "synthetic_train": (64, 0, (128, 128)),
    "synthetic_val": (16, 1, (128, 128)),
    "synthetic_train_256": (200, 2, (256, 256)),
    "synthetic_val_256": (50, 3, (256, 256)),
}


def register_all_synthetic() -> None:
    """Register ``synthetic_{train,val}`` (128 px, 64/16 images) and ``synthetic_{train,val}_256``
    (256 px, 200/50 images). Only registers; nothing is generated until a dataset is loaded.
    Called once, when :mod:`detkit` is imported (registering a name twice is an error)."""
    for name, (num_images, seed, image_size) in _BUILTIN_SYNTHETIC.items():
        register_synthetic(name, num_images, seed, image_size=image_size)
