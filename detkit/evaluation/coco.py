from detectron2.evaluation import COCOEvaluator

from ..data.coco_files import ensure_prepared


def build_coco_evaluator(dataset_name: str, output_dir=None, **kwargs) -> COCOEvaluator:
    """Detectron2's ``COCOEvaluator``, after making sure a generated dataset (tree crowns,
    synthetic) has written the COCO json the evaluator reads. ``kwargs`` go to COCOEvaluator
    (``tasks``, ``max_dets_per_image``, ``use_fast_impl``, ...)."""
    ensure_prepared(dataset_name)
    return COCOEvaluator(dataset_name, output_dir=output_dir, **kwargs)
