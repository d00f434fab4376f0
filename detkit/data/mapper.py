"""Detectron2's ``DatasetMapper`` whose failures name the image, and which refuses images that it
would otherwise train on wrongly without a word:

* 16-bit (and 32-bit integer / float) images: PIL's conversion to RGB clips every value above 255,
  so a 16-bit image becomes nearly white (mean 254.5 for a typical one);
* an EXIF orientation other than 1: Detectron2's ``read_image`` rotates the pixels but not the
  annotated boxes (a square image silently gets rotated pixels under unrotated boxes);
* an image larger than ``max_image_size`` (the CPU configs: 2048 px) when the augmentations do not
  resize: one 5000x5000 image needs ~16 GB for a CleanAnchors step and the process is killed
  without a message.

The checks read only the image header (PIL opens lazily).
"""
from typing import Optional

from detectron2.data import DatasetMapper as _DatasetMapper
from PIL import Image

from .errors import DatasetError

_EXIF_ORIENTATION = 0x0112
_UNSUPPORTED_MODES = {
    "I;16": "16-bit", "I;16L": "16-bit", "I;16B": "16-bit", "I;16N": "16-bit", "I": "32-bit integer",
    "F": "32-bit float",
}


def check_image_header(file_name: str, max_image_size: Optional[int] = None, where: str = "") -> None:
    """Raise DatasetError for an image the mapper would load wrongly (see the module docstring)."""
    try:
        with Image.open(file_name) as im:
            mode, (w, h) = im.mode, im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except (FileNotFoundError, OSError, ValueError):
        return  # unreadable: the loader's own error (named by DatasetMapper) says so
    if mode in _UNSUPPORTED_MODES:
        raise DatasetError(
            f"{file_name}{where}: a {_UNSUPPORTED_MODES[mode]} image (PIL mode {mode!r}). Detectron2 reads images as "
            "8-bit RGB and would clip every value above 255, training on a nearly white image. Convert the "
            "dataset to 8-bit first, scaling each image by its real range (e.g. numpy: "
            "(img / img.max() * 255).astype('uint8') or by 255/4095 for 12-bit data)."
        )
    if orientation != 1:
        raise DatasetError(
            f"{file_name}{where}: EXIF orientation {orientation} (not 1). Detectron2's reader rotates the pixels to "
            "that orientation but leaves the annotated boxes as they are, so they would no longer cover their "
            "objects. Re-save the image with the orientation applied to the pixels and the boxes "
            "(PIL.ImageOps.exif_transpose, then rotate the boxes the same way), or remove the EXIF tag if the "
            "boxes were drawn on the stored pixels."
        )
    if max_image_size is not None and max(w, h) > max_image_size:
        raise DatasetError(
            f"{file_name}{where}: {w}x{h} pixels, more than this loader's max_image_size={max_image_size} "
            "(dataloader.train.mapper.max_image_size): the model's memory grows with the image area (~16 GB for "
            "a 5000x5000 CleanAnchors step on a CPU). Add a resize to the mapper's augmentations (e.g. "
            "T.ResizeShortestEdge(800, max_size=1333)), cut the image into tiles, or raise max_image_size."
        )


class DatasetMapper(_DatasetMapper):
    """Detectron2's DatasetMapper whose failures name the image they happened on, and which refuses
    16-bit images, EXIF-rotated images and (with ``max_image_size``) oversized ones, naming the file
    and what to do (see the module docstring).

    Without this, a missing or corrupt image surfaces as a bare PIL traceback from inside a
    DataLoader worker, with no hint of which file it was.
    """

    def __init__(self, *args, max_image_size: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        if max_image_size is not None and not (isinstance(max_image_size, int) and max_image_size > 0):
            raise ValueError(f"DatasetMapper: max_image_size must be a whole number > 0 or None, got {max_image_size!r}")
        self.max_image_size = max_image_size

    def __call__(self, dataset_dict):
        file_name = dataset_dict.get("file_name", "<no file_name>")
        check_image_header(file_name, self.max_image_size, f" (image id {dataset_dict.get('image_id')})")
        try:
            return super().__call__(dataset_dict)
        except FileNotFoundError:
            raise DatasetError(
                f"{file_name}: image file not found (image id {dataset_dict.get('image_id')}). "
                "Check the dataset's image root; for a generated dataset delete its cache folder "
                "($DETKIT_CACHE, default ~/.cache/detkit) so that it is rebuilt."
            ) from None
        except Exception as e:
            raise DatasetError(
                f"{file_name}: cannot load this image or its annotations "
                f"({type(e).__name__}: {e}). Replace the file or remove it from the dataset."
            ) from e
