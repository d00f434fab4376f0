"""Users' own COCO-format datasets, checked before Detectron2 loads them.

``register_coco_dataset(name, json_file, image_root)`` is Detectron2's ``register_coco_instances``
whose loader first checks the json file (:func:`check_coco_json`) and only then calls Detectron2's
``load_coco_json``. Detectron2 alone reports a broken file as a bare ``json`` traceback, an
``AssertionError``, a ``KeyError: 'width'`` or not at all (annotations of unknown images are
dropped with a warning); here every problem is a :class:`~detkit.data.DatasetError` naming the
file, the entry (``annotations[12]``), the offending value and what to do.

Checked: the file exists and is valid JSON (the error gives line and column); it is an object with
``images``, ``annotations`` and ``categories`` lists, ``images`` and ``categories`` not empty;
every image has an integer ``id`` (unique), a ``file_name`` and positive integer ``width`` and
``height``; every category an integer ``id`` (unique) and a ``name``; every annotation an integer
``id`` (unique), an ``image_id`` that is the id of an image, a ``category_id`` that is the id of a
category, a ``bbox`` of 4 finite numbers ``[x, y, width, height]``, a non-negative ``area`` (which
``COCOEvaluator`` needs: without it training works and evaluation fails at the end) and no
``ignore`` flag (which Detectron2 does not support). The geometry of the boxes (zero area, outside
the image) is left to :func:`detkit.data.validation.validated_dataset_dicts`, which the training
loaders run.
"""
import json
import os
from typing import Dict, List, Sequence

import numpy as np

from .errors import DatasetError

__all__ = ["register_coco_dataset", "load_checked_coco_json", "check_coco_json"]

_FORMAT_HINT = "See https://cocodataset.org/#format-data for the COCO instances format."


def register_coco_dataset(
    name: str, json_file: str, image_root: str, *, replace: bool = False, **metadata
) -> None:
    """Register a COCO-format dataset (like Detectron2's ``register_coco_instances``) whose json is
    checked when the dataset is first loaded.

    Args:
        name: the dataset name for ``DatasetCatalog`` / configs (``dataloader.train.dataset.names``).
        json_file: COCO instances json (category ids any integers; Detectron2 maps them to
            contiguous ids 0..K-1 in the order of the ids and sets ``thing_classes``).
        image_root: folder the images' ``file_name`` are relative to.
        replace: for a config file that registers its own data (``configs/Examples``), which runs
            each time the config is loaded: a dataset of this name registered earlier by this
            function is kept if the paths are the same and replaced if they differ. Without it a
            second registration of a name is an error.
        metadata: extra ``MetadataCatalog`` entries.

    Raises:
        DatasetError: ``name`` is already registered (and ``replace`` is not set, or the dataset
            was not registered by this function, e.g. a built-in one).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    registration = (json_file, image_root, dict(metadata))
    if name in DatasetCatalog.list():
        if not replace or name not in _REGISTERED:
            raise DatasetError(
                f"dataset {name!r} is already registered"
                + ("" if name in _REGISTERED else " (a built-in dataset or one registered elsewhere)")
                + f": give {json_file} another name"
                + (", or pass replace=True to re-register it" if name in _REGISTERED else "")
                + "."
            )
        if _REGISTERED[name] == registration:
            return  # the same config loaded again: keep the registration (and its loaded metadata)
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_checked_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata
    )
    _REGISTERED[name] = registration


# name -> (json_file, image_root, metadata) of the datasets registered by register_coco_dataset
_REGISTERED: Dict[str, tuple] = {}


def load_checked_coco_json(json_file: str, image_root: str, dataset_name: str = None) -> List[Dict]:
    """:func:`check_coco_json`, then Detectron2's ``load_coco_json`` (same arguments and result)."""
    from detectron2.data.datasets import load_coco_json

    if not os.path.isdir(image_root):
        raise DatasetError(
            f"{image_root}: image folder of dataset {dataset_name!r} ({json_file}) does not exist. "
            "Pass the folder that the images' file_name entries are relative to."
        )
    check_coco_json(json_file)
    return load_coco_json(json_file, image_root, dataset_name)


def check_coco_json(json_file: str) -> Dict:
    """Check a COCO instances json file (see the module docstring) and return its content.

    Raises:
        DatasetError: naming the file, the entry, the value and what to do.
    """
    try:
        with open(json_file, encoding="utf-8") as f:
            coco = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{json_file}: annotation file not found. Check the path.") from None
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{json_file}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}. "
            "Fix the file there (a truncated copy or a hand edit?)."
        ) from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{json_file}: not a UTF-8 text file ({e}). Is it really a json file?") from None
    if not isinstance(coco, dict):
        raise DatasetError(
            f"{json_file}: the top level is a JSON {type(coco).__name__}, not an object with "
            f'"images", "annotations" and "categories". {_FORMAT_HINT}'
        )
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DatasetError(
                f'{json_file}: no "{key}" key (it has {sorted(coco)}). A COCO instances file needs '
                f'"images", "annotations" and "categories" lists (an empty "annotations" list is '
                f"fine). {_FORMAT_HINT}"
            )
        if not isinstance(coco[key], list) or not all(isinstance(e, dict) for e in coco[key]):
            raise DatasetError(f'{json_file}: "{key}" must be a list of objects. {_FORMAT_HINT}')
    for key in ("images", "categories"):
        if not coco[key]:
            raise DatasetError(f'{json_file}: "{key}" is empty; a dataset needs at least one.')

    images, categories, anns = coco["images"], coco["categories"], coco["annotations"]
    image_ids = _integer_ids(json_file, "images", images, "id")
    _unique(json_file, "images", image_ids)
    _present(json_file, "images", images, "file_name")
    for key in ("width", "height"):
        sizes = _integer_ids(json_file, "images", images, key)
        bad = np.flatnonzero(sizes <= 0)
        if bad.size:
            i = int(bad[0])
            raise DatasetError(f"{json_file}: images[{i}].{key} = {images[i][key]}; image sizes must be positive.")
    category_ids = _integer_ids(json_file, "categories", categories, "id")
    _unique(json_file, "categories", category_ids)
    _present(json_file, "categories", categories, "name")
    if not anns:
        return coco

    ann_ids = _integer_ids(json_file, "annotations", anns, "id")
    _unique(json_file, "annotations", ann_ids)
    for key, known, section in (
        ("image_id", image_ids, "images"),
        ("category_id", category_ids, "categories"),
    ):
        refs = _integer_ids(json_file, "annotations", anns, key)
        bad = np.flatnonzero(~np.isin(refs, known))
        if bad.size:
            i = int(bad[0])
            raise DatasetError(
                f"{json_file}: annotations[{i}] (id {anns[i]['id']}) has {key} {refs[i]}, which is not "
                f'the id of any entry of "{section}" (ids {_describe_ids(known)}); {bad.size} '
                f"annotation(s) have such a {key}. Fix or remove them, or add the missing {section}."
            )
    _check_bboxes(json_file, anns)
    _check_areas(json_file, anns)
    ignored = [i for i, a in enumerate(anns) if a.get("ignore", 0)]
    if ignored:
        raise DatasetError(
            f'{json_file}: annotations[{ignored[0]}] has "ignore": {anns[ignored[0]]["ignore"]}, '
            f'which Detectron2 does not support ({len(ignored)} such annotations); mark regions to '
            'ignore with "iscrowd": 1 instead.'
        )
    return coco


def _present(json_file: str, section: str, entries: List[Dict], key: str) -> None:
    missing = [i for i, e in enumerate(entries) if key not in e]
    if missing:
        raise DatasetError(
            f'{json_file}: {section}[{missing[0]}] has no "{key}" ({len(missing)} of the '
            f"{len(entries)} {section} lack it; keys there: {sorted(entries[missing[0]])}). {_FORMAT_HINT}"
        )


def _integer_ids(json_file: str, section: str, entries: List[Dict], key: str) -> np.ndarray:
    """The integer values of ``key`` in every entry, as an int64 array (an error if one lacks it
    or is not an integer)."""
    _present(json_file, section, entries, key)
    values = [e[key] for e in entries]
    not_int = [i for i, v in enumerate(values) if not isinstance(v, int) or isinstance(v, bool)]
    if not_int:
        i = not_int[0]
        raise DatasetError(
            f"{json_file}: {section}[{i}].{key} = {values[i]!r} is not an integer "
            f"({len(not_int)} such entries). {_FORMAT_HINT}"
        )
    return np.asarray(values, dtype=np.int64)


def _unique(json_file: str, section: str, ids: np.ndarray) -> None:
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if dup.size:
        first, second = int(order[dup[0]]), int(order[dup[0] + 1])
        raise DatasetError(
            f"{json_file}: {section}[{second}] has id {ids[second]}, which {section}[{first}] has "
            f"too; ids must be unique within {section!r}. Renumber them."
        )


def _check_bboxes(json_file: str, anns: List[Dict]) -> None:
    _present(json_file, "annotations", anns, "bbox")
    bboxes = [a["bbox"] for a in anns]
    shape_ok = [
        isinstance(b, list)
        and len(b) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
        for b in bboxes
    ]
    bad = [i for i, ok in enumerate(shape_ok) if not ok]
    if not bad:
        finite = np.isfinite(np.asarray(bboxes, dtype=np.float64)).all(axis=1)
        bad = np.flatnonzero(~finite).tolist()
    if bad:
        i = bad[0]
        raise DatasetError(
            f"{json_file}: annotations[{i}] (id {anns[i]['id']}, image_id {anns[i].get('image_id')}) "
            f"has bbox {bboxes[i]!r}; a bbox is a list of 4 finite numbers [x, y, width, height] "
            f"in pixels ({len(bad)} annotation(s) have a bad bbox). Fix or remove them."
        )


def _check_areas(json_file: str, anns: List[Dict]) -> None:
    missing = [i for i, a in enumerate(anns) if "area" not in a]
    if missing:
        i = missing[0]
        raise DatasetError(
            f"{json_file}: annotations[{i}] (id {anns[i]['id']}) has no \"area\" ({len(missing)} "
            "annotation(s) lack it). COCOEvaluator needs it to sort boxes into small/medium/large: "
            "add the object's area in pixels (width * height of the bbox without a mask)."
        )
    areas = [a["area"] for a in anns]
    bad = [i for i, v in enumerate(areas) if not isinstance(v, (int, float)) or isinstance(v, bool)]
    if not bad:
        bad = np.flatnonzero(~(np.asarray(areas, dtype=np.float64) >= 0)).tolist()  # NaN too
    if bad:
        i = bad[0]
        raise DatasetError(
            f"{json_file}: annotations[{i}] (id {anns[i]['id']}) has area {areas[i]!r}; it must be "
            "a non-negative number of pixels. Fix it."
        )


def _describe_ids(ids: Sequence[int]) -> str:
    ids = np.unique(np.asarray(ids))
    if ids.size and ids[-1] - ids[0] + 1 == ids.size:
        return f"{ids[0]}..{ids[-1]}"
    shown = ", ".join(str(int(v)) for v in ids[:10])
    return f"[{shown}{', ...' if ids.size > 10 else ''}]"
