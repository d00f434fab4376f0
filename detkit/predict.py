"""See what a model detects: Detectron2's ``DefaultPredictor`` logic for LazyConfig models, on whole
images or on large images cut into overlapping tiles, with pictures (Detectron2's ``Visualizer``),
a COCO-results json and a DeepForest-style CSV. ``tools/predict.py`` is its command line.

* :class:`Predictor` runs a model (from :func:`detkit.analysis.load_model`) on RGB images: each
  image goes through the config's test augmentations (``cfg.dataloader.test.mapper.augmentations``,
  e.g. ``ResizeShortestEdge`` for COCO, none for the tree-crown tiles), the boxes are mapped back to
  the original image with the inverse transforms, as ``train_net.py --eval-only`` would see them.
  The config's ``test`` node applies as in ``train_net.py``: ``test.soft_nms.enabled`` replaces the
  model's NMS by Soft-NMS, ``test.aug.enabled`` runs the multi-scale/flip TTA wrapper
  (:func:`detkit.modeling.tta.build_tta_model`).
* :func:`tile_windows` / :func:`predict_tiled` / :func:`merge_tile_detections`: a large image is cut
  into ``tile`` x ``tile`` windows that share ``overlap`` pixels, the last row/column aligned with the
  image border (the tiling of :mod:`detkit.data.treecrowns`); tiles are predicted in batches (memory
  is that of one batch) and their boxes shifted back into the image. Merging across tile borders:

  1. a box that its tile cuts (it touches, within :data:`EDGE_TOLERANCE` px, an *inner* edge of
     the tile: one that is not the image border) is dropped when another tile sees it whole
     (contains it away from that tile's own inner edges): that tile's box for the object counts.
     With ``overlap`` larger than the objects every object is seen whole by some tile, so the
     partial boxes of a crown on a tile border go, whatever their IoU with the whole one;
  2. then the union goes through per-class NMS at the model's own threshold (objects larger than
     the overlap, cut in both tiles, are merged here, and so are the boxes of an object that two
     tiles see whole: nearly the same box twice). :class:`Predictor` runs each tile with the
     model's full inference (Soft-NMS when ``test.soft_nms.enabled``, TTA when ``test.aug.enabled``)
     and merges with hard NMS, so no box is decayed twice; :func:`merge_tile_detections` can also
     run one Soft-NMS over the union of the tiles' NMS candidates (exact, but O(picks x
     candidates): too slow for a large image's tens of thousands of candidates).

  A box that touches no other tile comes out exactly as its tile predicted it: hard NMS between
  boxes of one tile is a no-op the second time.
"""
import csv
import glob
import json
import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import convert_PIL_to_numpy, read_image
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances
from omegaconf import OmegaConf
from PIL import Image

from .engine import TEST_DEFAULTS
from .modeling.nms_inference import detections_before_nms, nms_owner, soft_nms_inference, unwrap_model
from .modeling.soft_nms import batched_soft_nms, soft_nms_options
from .modeling.tta import build_tta_model
from .visualization import detectron2_visualizer

__all__ = [
    "EDGE_TOLERANCE",
    "IMAGE_EXTENSIONS",
    "Detections",
    "ImageReadError",
    "Predictor",
    "test_augmentations",
    "test_metadata",
    "list_images",
    "read_rgb_image",
    "tile_windows",
    "drop_cut_boxes",
    "merge_tile_detections",
    "predict_tiled",
    "draw_detections",
    "PredictionWriter",
    "predict_files",
    "comparison_figure",
    "compare_models_on_image",
]

logger = logging.getLogger(__name__)

#: A box within this many pixels of a tile's inner edge counts as cut off by it.
EDGE_TOLERANCE = 2.0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
CSV_COLUMNS = ("file", "xmin", "ymin", "xmax", "ymax", "label", "score")
_UNSUPPORTED_MODES = {"I;16": "16-bit", "I;16L": "16-bit", "I;16B": "16-bit", "I;16N": "16-bit",
                      "I": "32-bit integer", "F": "32-bit float"}


class ImageReadError(RuntimeError):
    """An input image that cannot be used; the message names the file and what to do."""


@dataclass
class Detections:
    """Detections of one image, on the CPU.

    Attributes:
        boxes: (N, 4) float32 XYXY in the image's pixels.
        scores: (N,) float32.
        classes: (N,) int64 contiguous class indices (``thing_classes`` order).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @staticmethod
    def from_instances(instances: Instances) -> "Detections":
        instances = instances.to("cpu")
        return Detections(
            instances.pred_boxes.tensor.numpy().astype(np.float32).reshape(-1, 4),
            instances.scores.numpy().astype(np.float32).reshape(-1),
            instances.pred_classes.numpy().astype(np.int64).reshape(-1),
        )

    @staticmethod
    def cat(items: Sequence["Detections"]) -> "Detections":
        if not items:
            return Detections.empty()
        return Detections(
            np.concatenate([d.boxes for d in items]).reshape(-1, 4),
            np.concatenate([d.scores for d in items]),
            np.concatenate([d.classes for d in items]),
        )

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index) -> "Detections":
        return Detections(self.boxes[index].reshape(-1, 4), self.scores[index], self.classes[index])

    def shifted(self, dx: float, dy: float) -> "Detections":
        return Detections(self.boxes + np.array([dx, dy, dx, dy], np.float32), self.scores, self.classes)

    def above(self, score_thresh: float) -> "Detections":
        """The detections scoring at least ``score_thresh``, best first."""
        keep = np.nonzero(self.scores >= score_thresh)[0]
        keep = keep[np.argsort(-self.scores[keep], kind="stable")]
        return self[keep]

    def to_instances(self, image_size: Tuple[int, int]) -> Instances:
        """Detectron2 ``Instances`` of an image of ``image_size`` (H, W), for ``Visualizer``."""
        return Instances(
            image_size,
            pred_boxes=Boxes(torch.as_tensor(self.boxes, dtype=torch.float32)),
            scores=torch.as_tensor(self.scores),
            pred_classes=torch.as_tensor(self.classes),
        )


# ---------------------------------------------------------------- config pieces


def test_augmentations(cfg) -> List[T.Augmentation]:
    """The config's test-time augmentations (``cfg.dataloader.test.mapper.augmentations``,
    instantiated), or none when the config has no such key."""
    mapper = cfg.get("dataloader", {}).get("test", {}).get("mapper", None)
    if mapper is None or "augmentations" not in mapper:
        return []
    return list(instantiate(mapper.augmentations))


def test_metadata(cfg):
    """Detectron2 metadata of the config's test dataset (first of ``dataloader.test.dataset.names``),
    or of no dataset (empty) when the config names none."""
    names = cfg.get("dataloader", {}).get("test", {}).get("dataset", {}).get("names", None)
    if names is None:
        return MetadataCatalog.get("__detkit_predict_unknown__")
    if not isinstance(names, str):
        names = list(names)[0]
    return MetadataCatalog.get(names)


def _class_names(metadata) -> Optional[List[str]]:
    return list(metadata.get("thing_classes", None) or []) or None


def _label(names: Optional[Sequence[str]], cls: int) -> str:
    return names[cls] if names is not None and 0 <= cls < len(names) else str(cls)


# ---------------------------------------------------------------- inputs


def list_images(inputs: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Image files named by ``inputs``: files, glob patterns and folders (their files with an image
    extension, :data:`IMAGE_EXTENSIONS`, not recursive), in order, each once.

    Returns:
        files: the image paths (a plain path is kept even if it does not exist: reading it names it);
        problems: ``(input, reason)`` for a pattern or folder that gives no image.
    """
    files, problems = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, f) for f in os.listdir(item)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, f))
            )
            if not found:
                problems.append((item, f"folder holds no image ({', '.join(IMAGE_EXTENSIONS)})"))
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(item) if os.path.isfile(f))
            if not found:
                problems.append((item, "pattern matches no file"))
        else:
            found = [item]
        for f in found:
            if f not in files:
                files.append(f)
    return files, problems


def read_rgb_image(path: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (EXIF orientation applied, as Detectron2's reader does).

    Raises:
        ImageReadError: a missing, unreadable or corrupt file, or a 16/32-bit image (which PIL would
            clip to a nearly white 8-bit one), naming the file.
    """
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            mode = im.mode
        if mode in _UNSUPPORTED_MODES:
            raise ImageReadError(
                f"{path}: a {_UNSUPPORTED_MODES[mode]} image (PIL mode {mode!r}); convert it to 8-bit first, "
                "scaling by its real range"
            )
        return np.ascontiguousarray(read_image(path, format="RGB"))
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot read the image ({type(e).__name__}: {e}); is it a corrupt or non-image file?") from None


# ---------------------------------------------------------------- the predictor


class Predictor:
    """A detector on RGB numpy images, as ``train_net.py --eval-only`` runs it.

    Args:
        cfg: the LazyConfig (its ``dataloader.test.mapper.augmentations`` and ``test`` node).
        model: the detector in eval mode (:func:`detkit.analysis.load_model`).

    Attributes:
        soft_nms: the Soft-NMS options (``test.soft_nms``), or None for the model's NMS.
        tta: whether ``test.aug.enabled`` (multi-scale/flip TTA).
        nms_thresh: the model's NMS IoU threshold (used to merge tiles).
        metadata: the config's test dataset's metadata (class names).
    """

    def __init__(self, cfg, model: torch.nn.Module):
        test = OmegaConf.merge(OmegaConf.create(TEST_DEFAULTS), cfg.get("test") or {})
        self.model = unwrap_model(model).eval()
        self.soft_nms = soft_nms_options(test.soft_nms)
        self.tta = bool(test.aug.enabled)
        try:
            owner, _ = nms_owner(self.model)
            self.nms_thresh = float(owner.test_nms_thresh)
        except TypeError:
            if self.soft_nms or self.tta:
                raise
            self.nms_thresh = None  # a model without class-wise NMS: no tiling merge
        self.runner = build_tta_model(self.model, test) if self.tta else self.model
        self.augmentations = T.AugmentationList(test_augmentations(cfg))
        self.input_format = getattr(self.model, "input_format", "BGR")
        self.metadata = test_metadata(cfg)

    def _model_input(self, image: np.ndarray) -> Tuple[Dict, T.Transform]:
        aug = T.AugInput(image)
        transforms = self.augmentations(aug)
        im = aug.image
        if self.input_format == "BGR":
            im = im[:, :, ::-1]
        elif self.input_format != "RGB":
            im = convert_PIL_to_numpy(Image.fromarray(im), self.input_format)
        tensor = torch.as_tensor(np.ascontiguousarray(im.transpose(2, 0, 1)))
        return {"image": tensor, "height": im.shape[0], "width": im.shape[1]}, transforms

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray], before_nms: bool = False) -> List[Detections]:
        """Detections of each (H, W, 3) uint8 RGB image, in its own pixels, clipped to it.

        Args:
            before_nms: return all the model's NMS candidates (no NMS, no per-image cap; see
                :func:`~detkit.modeling.nms_inference.detections_before_nms`); not with TTA.
        """
        if before_nms and self.tta:
            raise ValueError("Predictor: before_nms is not available with test-time augmentation")
        if not images:
            return []
        inputs, transforms = zip(*(self._model_input(im) for im in images))
        if before_nms:
            context = detections_before_nms(self.model)
        elif self.soft_nms and not self.tta:
            context = soft_nms_inference(self.model, **self.soft_nms)
        else:
            context = nullcontext()
        with context:
            outputs = self.runner(list(inputs))
        results = []
        for image, out, tfm in zip(images, outputs, transforms):
            if "instances" not in out:
                raise TypeError(f"{type(self.model).__name__} returns no 'instances' (a proposal network?): nothing to draw")
            dets = Detections.from_instances(out["instances"])
            if len(dets):
                dets.boxes = np.asarray(tfm.inverse().apply_box(dets.boxes), dtype=np.float32).reshape(-1, 4)
            h, w = image.shape[:2]
            dets.boxes = dets.boxes.clip(0, [w, h, w, h]).astype(np.float32)
            results.append(dets)
        return results

    def predict_tiled(self, image: np.ndarray, tile: int, overlap: int, batch_size: int = 4,
                      progress: bool = True, desc: str = "") -> Detections:
        """:func:`predict_tiled` with this model: each tile gets the model's full inference (its NMS,
        or Soft-NMS when ``test.soft_nms`` is enabled, TTA when ``test.aug`` is), and the tiles are
        merged with hard NMS at the model's threshold, so no box is decayed twice. (One Soft-NMS
        over all tiles' NMS candidates, ``predict_tiled(..., soft_nms=...)``, costs O(picks x
        candidates): it did not finish in 9 minutes for the 72 tiles of a 2299 x 2472 image.)"""
        if self.nms_thresh is None:
            raise TypeError(f"{type(self.model).__name__} has no class-wise NMS step: tiles cannot be merged")
        return predict_tiled(
            image, self, tile, overlap, batch_size=batch_size, nms_thresh=self.nms_thresh, soft_nms=None,
            progress=progress, desc=desc,
        )


# ---------------------------------------------------------------- tiling


def tile_windows(width: int, height: int, tile: int, overlap: int) -> np.ndarray:
    """Windows ``(x0, y0, x1, y1)`` (T, 4) int64 of ``tile``-px squares covering a ``width`` x
    ``height`` image, row by row; neighbours share ``overlap`` px (more for the last row/column, which
    is aligned with the image border); an image side shorter than ``tile`` gives one window of that
    side's length. Same origins as the tree-crown datasets (:func:`detkit.data.treecrowns.tile_origins`)."""
    from .data.treecrowns import tile_origins

    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"--tile {tile!r}: the tile size must be a whole number of pixels >= 1")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < tile:
        raise ValueError(f"--overlap {overlap!r}: must be a whole number of pixels >= 0 and below --tile {tile}")
    return np.array(
        [(x, y, min(x + tile, width), min(y + tile, height))
         for y in tile_origins(height, tile, overlap) for x in tile_origins(width, tile, overlap)],
        dtype=np.int64,
    ).reshape(-1, 4)


def _cut_by_inner_edges(boxes: np.ndarray, window: np.ndarray, width: int, height: int, tol: float) -> np.ndarray:
    """(N,) whether each box (image coords) touches an edge of ``window`` that is not the image border."""
    x0, y0, x1, y1 = (float(v) for v in window)
    return (
        ((x0 > 0) & (boxes[:, 0] <= x0 + tol))
        | ((y0 > 0) & (boxes[:, 1] <= y0 + tol))
        | ((x1 < width) & (boxes[:, 2] >= x1 - tol))
        | ((y1 < height) & (boxes[:, 3] >= y1 - tol))
    )


def drop_cut_boxes(per_tile: Sequence[Detections], windows: np.ndarray, width: int, height: int,
                   tol: float = EDGE_TOLERANCE) -> List[Detections]:
    """Step 1 of the merge (module docstring): from each tile's detections (image coordinates)
    drop the boxes that their own tile cuts (touching, within ``tol`` px, an edge of the tile that
    is not the image border) while another tile sees them whole (contains them away from its own
    inner edges). Returns the remaining detections per tile."""
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
    kept = []
    for t, dets in enumerate(per_tile):
        if len(dets) == 0:
            kept.append(dets)
            continue
        boxes = dets.boxes.astype(np.float64)
        cut = _cut_by_inner_edges(boxes, windows[t], width, height, tol)
        drop = np.zeros(len(dets), dtype=bool)
        for u, w in enumerate(windows):
            if u == t or not cut.any():
                continue
            inside = (boxes[:, 0] >= w[0]) & (boxes[:, 1] >= w[1]) & (boxes[:, 2] <= w[2]) & (boxes[:, 3] <= w[3])
            drop |= cut & inside & ~_cut_by_inner_edges(boxes, w, width, height, tol)
        kept.append(dets[np.nonzero(~drop)[0]])
    return kept


def merge_tile_detections(per_tile: Sequence[Detections], windows: np.ndarray, width: int, height: int,
                          nms_thresh: float, soft_nms: Optional[Mapping] = None,
                          tol: float = EDGE_TOLERANCE) -> Detections:
    """Merge the detections of overlapping tiles (each in image coordinates) into those of the
    image: :func:`drop_cut_boxes`, then per-class ``batched_nms(nms_thresh)`` or, with ``soft_nms``
    (the keyword arguments of :func:`~detkit.modeling.soft_nms.batched_soft_nms`), Soft-NMS over the
    union (scores decayed). No per-image cap. Returns the detections best first."""
    union = Detections.cat(drop_cut_boxes(per_tile, windows, width, height, tol))
    if len(union) == 0:
        return union
    boxes = torch.as_tensor(union.boxes, dtype=torch.float32)
    scores = torch.as_tensor(union.scores, dtype=torch.float32)
    classes = torch.as_tensor(union.classes)
    if soft_nms is not None:
        keep, new_scores = batched_soft_nms(boxes, scores, classes, **soft_nms)
        merged = union[keep.numpy()]
        merged.scores = new_scores.numpy().astype(np.float32)
        return merged
    keep = batched_nms(boxes, scores, classes, float(nms_thresh))  # sorted by decreasing score
    return union[keep.numpy()]


def predict_tiled(
    image: np.ndarray,
    predict: Callable[[List[np.ndarray]], List[Detections]],
    tile: int,
    overlap: int,
    batch_size: int = 4,
    nms_thresh: float = 0.5,
    soft_nms: Optional[Mapping] = None,
    progress: bool = True,
    desc: str = "",
) -> Detections:
    """Detections of a large (H, W, 3) image from those of its tiles (:func:`tile_windows`).

    Args:
        predict: detections of a list of (h, w, 3) crops, each in the crop's own pixels
            (e.g. a :class:`Predictor`); called with at most ``batch_size`` crops at a time.
        nms_thresh, soft_nms: the merge (:func:`merge_tile_detections`).
        progress: a tqdm bar over the tiles (on stderr).

    Returns:
        the merged detections in the image's pixels, best first.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"--batch-size {batch_size!r}: must be a whole number >= 1")
    height, width = image.shape[:2]
    windows = tile_windows(width, height, tile, overlap)
    per_tile: List[Detections] = []
    from tqdm import tqdm

    with tqdm(total=len(windows), unit="tile", desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            crops = [image[y0:y1, x0:x1] for x0, y0, x1, y1 in batch]
            outputs = predict(crops)
            if len(outputs) != len(crops):
                raise ValueError(f"predict returned {len(outputs)} results for {len(crops)} tiles")
            per_tile.extend(d.shifted(float(w[0]), float(w[1])) for d, w in zip(outputs, batch))
            bar.update(len(batch))
    return merge_tile_detections(per_tile, windows, width, height, nms_thresh, soft_nms)


# ---------------------------------------------------------------- outputs


def draw_detections(image: np.ndarray, detections: Detections, metadata=None, scale: float = 1.0) -> np.ndarray:
    """(H, W, 3) uint8 RGB picture of the boxes, class names and scores, drawn by Detectron2's
    ``Visualizer.draw_instance_predictions`` (class names from ``metadata.thing_classes``)."""
    vis = detectron2_visualizer(image, detections.boxes, metadata, scale)
    return vis.draw_instance_predictions(detections.to_instances(image.shape[:2])).get_image()


def _save_png(array: np.ndarray, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(array).save(path)
    return path


class PredictionWriter:
    """Writes the outputs of a prediction run into ``folder``: one picture per image
    (``<stem>.png``; ``<stem>_2.png`` ... when stems repeat), and at :meth:`close`
    ``predictions.csv`` (``file,xmin,ymin,xmax,ymax,label,score``: DeepForest's column names, one row
    per detection), ``coco_instances_results.json`` (COCO results: ``image_id``, ``category_id`` in
    the dataset's ids when its metadata maps them, ``bbox`` XYWH, ``score``) and ``images.json``
    (COCO ``images`` entries: ``id``, ``file_name``, ``width``, ``height``)."""

    def __init__(self, folder: str, metadata=None, draw: bool = True):
        self.folder = folder
        self.metadata = metadata
        self.draw = draw
        self.names = _class_names(metadata) if metadata is not None else None
        mapping = metadata.get("thing_dataset_id_to_contiguous_id", None) if metadata is not None else None
        self.to_dataset_id = {v: k for k, v in mapping.items()} if mapping else None
        self.rows, self.coco, self.images, self._stems = [], [], [], set()
        os.makedirs(folder, exist_ok=True)

    def add(self, file_name: str, image: np.ndarray, detections: Detections) -> Optional[str]:
        image_id = len(self.images)
        height, width = image.shape[:2]
        self.images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for (x0, y0, x1, y1), score, cls in zip(detections.boxes.tolist(), detections.scores.tolist(),
                                                 detections.classes.tolist()):
            self.rows.append([file_name, round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2),
                              _label(self.names, cls), round(score, 5)])
            category = self.to_dataset_id.get(cls, cls) if self.to_dataset_id else cls
            self.coco.append({"image_id": image_id, "category_id": int(category),
                              "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
        if not self.draw:
            return None
        stem = os.path.splitext(os.path.basename(file_name))[0]
        name, n = stem, 1
        while name in self._stems:
            n += 1
            name = f"{stem}_{n}"
        self._stems.add(name)
        return _save_png(draw_detections(image, detections, self.metadata), os.path.join(self.folder, name + ".png"))

    def close(self) -> Dict[str, str]:
        paths = {k: os.path.join(self.folder, v) for k, v in
                 (("csv", "predictions.csv"), ("coco", "coco_instances_results.json"), ("images", "images.json"))}
        with open(paths["csv"], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(self.rows)
        with open(paths["coco"], "w") as f:
            json.dump(self.coco, f)
        with open(paths["images"], "w") as f:
            json.dump(self.images, f, indent=1)
        return paths


def predict_files(
    predictor: Predictor,
    files: Sequence[str],
    output: str,
    score_thresh: float = 0.1,
    tile: Optional[int] = None,
    overlap: int = 0,
    batch_size: int = 4,
    progress: bool = True,
    draw: bool = True,
) -> Dict:
    """Predict every image file and write :class:`PredictionWriter`'s outputs into ``output``.

    An image that cannot be read is logged (named) and skipped; the others still run.

    Args:
        score_thresh: detections below it are left out of every output.
        tile, overlap: cut each image into tiles (:meth:`Predictor.predict_tiled`); None: whole images,
            ``batch_size`` images per forward pass.

    Returns:
        ``{"images": number predicted, "detections": number written, "failed": [(file, reason)],
        "outputs": {kind: path}}``.
    """
    if not 0.0 <= float(score_thresh) <= 1.0:
        raise ValueError(f"--score-thresh {score_thresh!r}: must be in [0, 1]")
    if tile is not None:
        tile_windows(tile, tile, tile, overlap)  # checks --tile / --overlap before any work
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size {batch_size!r}: must be a whole number >= 1")
    writer = PredictionWriter(output, predictor.metadata, draw=draw)
    failed, done, count = [], 0, 0

    from tqdm import tqdm

    bar = tqdm(total=len(files), unit="image", disable=not progress or tile is not None, leave=False)

    def readable(paths):
        for path in paths:
            try:
                yield path, read_rgb_image(path)
            except ImageReadError as e:
                logger.error(f"skipped {e}")
                failed.append((path, str(e)))
                bar.update(1)

    if tile is not None:
        for path, image in readable(files):
            dets = predictor.predict_tiled(image, tile, overlap, batch_size, progress=progress,
                                           desc=os.path.basename(path)).above(score_thresh)
            writer.add(path, image, dets)
            done, count = done + 1, count + len(dets)
    else:
        pending = []

        def flush():
            nonlocal done, count
            for (p, im), dets in zip(pending, predictor([im for _, im in pending])):
                dets = dets.above(score_thresh)
                writer.add(p, im, dets)
                done, count = done + 1, count + len(dets)
            bar.update(len(pending))
            pending.clear()

        for item in readable(files):
            pending.append(item)
            if len(pending) == batch_size:
                flush()
        flush()
    bar.close()
    return {"images": done, "detections": count, "failed": failed, "outputs": writer.close()}


# ---------------------------------------------------------------- several models on one image


def comparison_figure(image: np.ndarray, gt_boxes: np.ndarray, predictions: Mapping[str, Detections],
                      metadata=None, title: str = "", size_inches: float = 4.5):
    """A matplotlib Figure: the ground truth (``gt_boxes`` (G, 4) XYXY) and each model's
    detections on the same (H, W, 3) RGB image, side by side, drawn by Detectron2's Visualizer."""
    from matplotlib.figure import Figure

    gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
    panels = [(f"ground truth ({len(gt_boxes)} boxes)",
               detectron2_visualizer(image, gt_boxes, metadata).overlay_instances(boxes=gt_boxes).get_image())]
    for name, dets in predictions.items():
        panels.append((f"{name}\n{len(dets)} detections", draw_detections(image, dets, metadata)))
    height, width = image.shape[:2]
    fig = Figure(figsize=(size_inches * len(panels), size_inches * height / width + 0.8))
    for i, (label, picture) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(picture)
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def compare_models_on_image(
    models: Sequence[Tuple[str, str, str]],
    out_path: str,
    opts: Sequence[str] = (),
    dataset: Optional[str] = None,
    index: Optional[int] = None,
    score_thresh: float = 0.3,
    dpi: int = 90,
) -> str:
    """Draw several trained models' predictions on one test image beside its ground truth
    (``make demo`` ends with this) and write the PNG to ``out_path``.

    Args:
        models: ``(label, config_file, checkpoint)`` per model (checkpoints loaded with
            :func:`detkit.analysis.load_model`, so a method's checkpoint may run in its stock model).
        opts: ``key=value`` overrides for every config.
        dataset: registered dataset to take the image from (default: the first config's test dataset).
        index: its image index (default: the one with the most ground-truth boxes, first on ties).
        score_thresh: detections below it are not drawn.

    Returns:
        ``out_path``.
    """
    from detectron2.data import DatasetCatalog
    from detectron2.structures import BoxMode

    from .analysis import load_config, load_model
    from .visualization import save_figure

    if not models:
        raise ValueError("compare_models_on_image: no models given")
    cfgs = [load_config(cfg_file, opts) for _, cfg_file, _ in models]
    if dataset is None:
        names = cfgs[0].dataloader.test.dataset.names
        dataset = names if isinstance(names, str) else list(names)[0]
    dicts = DatasetCatalog.get(dataset)
    if index is None:
        index = int(np.argmax([len(d.get("annotations", [])) for d in dicts]))
    if not 0 <= index < len(dicts):
        raise IndexError(f"image index {index} is outside dataset {dataset!r} ({len(dicts)} images)")
    record = dicts[index]
    image = read_rgb_image(record["file_name"])
    gt = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record.get("annotations", [])],
                  dtype=np.float32).reshape(-1, 4)
    predictions = {}
    for (label, _, checkpoint), cfg in zip(models, cfgs):
        predictor = Predictor(cfg, load_model(cfg, checkpoint))
        predictions[label] = predictor([image])[0].above(score_thresh)
    metadata = MetadataCatalog.get(dataset)
    title = f"{dataset}[{index}] {os.path.basename(record['file_name'])}: detections with score >= {score_thresh:g}"
    fig = comparison_figure(image, gt, predictions, metadata, title=title)
    return save_figure(fig, out_path, dpi=dpi)
