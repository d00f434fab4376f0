"""Are a config's datasets there? Checked before a model is built, so that a COCO / VOC config on a
machine without the data fails at once with one line naming the path and the variable to set,
instead of a traceback from deep inside Detectron2's loaders minutes later."""
import difflib
import os
from typing import Iterable, List

from .coco_files import is_generated
from .errors import DatasetError

__all__ = ["config_dataset_names", "check_dataset_files"]

# metadata keys of Detectron2's registrations that name files or folders a dataset needs
_PATH_KEYS = (("json_file", "annotation file"), ("image_root", "image folder"), ("dirname", "dataset folder"),
              ("panoptic_root", "panoptic folder"), ("sem_seg_root", "segmentation folder"))


def _names(value) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def config_dataset_names(cfg, train: bool = True) -> List[str]:
    """The registered dataset names a LazyConfig reads: ``dataloader.test.dataset.names`` and, when
    ``train``, ``dataloader.train.dataset.names`` (in that order, without repeats)."""
    out = []
    loaders = ("train", "test") if train else ("test",)
    for part in loaders:
        try:
            names = cfg.dataloader[part].dataset.names
        except Exception:  # a config without such a node (a custom loader)
            continue
        out += [n for n in _names(names) if n not in out]
    return out


def _d2_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def check_dataset_files(names: Iterable[str]) -> None:
    """Raise :class:`DatasetError` (one line) for the first dataset that is not registered or whose
    registered files are missing. Datasets generated on first use (tree crowns, synthetic) pass."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    registered = DatasetCatalog.list()
    for name in names:
        if name not in registered:
            close = difflib.get_close_matches(name, registered, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else " See DatasetCatalog.list() for the registered ones."
            raise DatasetError(f"Dataset {name!r} is not registered.{hint}")
        if is_generated(name):
            continue
        meta = MetadataCatalog.get(name).as_dict()
        for key, what in _PATH_KEYS:
            path = meta.get(key)
            if not isinstance(path, str) or os.path.exists(path):
                continue
            raise DatasetError(f"Dataset {name!r}: {what} {path} not found. {_how_to_fix(path)}")


def _how_to_fix(path: str) -> str:
    root = _d2_root()
    under_root = os.path.abspath(path).startswith(os.path.abspath(root) + os.sep)
    if not under_root:
        return "Put the files there or register the dataset with the right paths."
    top = os.path.relpath(path, root).split(os.sep)[0]
    where = (f"$DETECTRON2_DATASETS={os.environ['DETECTRON2_DATASETS']}" if "DETECTRON2_DATASETS" in os.environ
             else f"$DETECTRON2_DATASETS is not set, so ./{root} of the working directory {os.getcwd()}")
    return (f"Detectron2 looks for its built-in datasets under $DETECTRON2_DATASETS ({where}): set "
            f"DETECTRON2_DATASETS to the folder that holds {top}/ (layout: Detectron2's datasets/README.md).")
