"""RetinaNet R50-FPN on VOC 07+12 → VOC07 test, Detectron2's VOC schedule at RetinaNet's lr 0.01.
The baseline of SWN paper Table 2 (VOC07 test, COCO-style AP: 52.0)."""
from ..common.data.voc import dataloader
from detkit.modeling import GlobalNormalizerRetinaNet

from ..common.model_zoo import model_zoo_parts, voc_schedule

_, model, optimizer, lr_multiplier, train = model_zoo_parts("COCO-Detection/retinanet_R_50_FPN_1x.py")
model._target_ = GlobalNormalizerRetinaNet  # positives of all processes; identical in one process
model.global_loss_normalizer = True
model.smooth_l1_beta = 0.11  # the SWN reference code's RetinaNet (paired with swn_retinanet_R_50_FPN.py)
model.num_classes = 20
voc_schedule(lr_multiplier, train)
train.output_dir = "./output/PascalVOC-Detection/retinanet_R_50_FPN"
