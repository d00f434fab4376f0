"""Registers the built-in generated datasets. COCO and VOC keep Detectron2's own registrations
(``coco_2017_*``, ``voc_20{07,12}_*`` under ``$DETECTRON2_DATASETS``)."""
from .synthetic import register_all_synthetic
from .treecrowns import register_all_treecrowns

register_all_treecrowns()
register_all_synthetic()
