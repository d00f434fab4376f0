from detectron2.data import DatasetMapper as _DatasetMapper

from .errors import DatasetError


class DatasetMapper(_DatasetMapper):
    """Detectron2's DatasetMapper whose failures name the image they happened on.

    Without this, a missing or corrupt image surfaces as a bare PIL traceback from inside a
    DataLoader worker, with no hint of which file it was.
    """

    def __call__(self, dataset_dict):
        file_name = dataset_dict.get("file_name", "<no file_name>")
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
