"""Your own COCO-format data: Detectron2's RetinaNet on a MobileNetV2-FPN sized for a CPU (the
tree-crown model: 128-channel FPN, anchors 16-256 px; 500 iterations of 4 images, SGD lr 0.01).
Edit the block below (where the json files and images are, the dataset names, the class count),
then train and evaluate (README "Your own data"):

    python train_net.py --config-file configs/Examples/retinanet_mnv2_fpn.py
    python train_net.py --config-file configs/Examples/retinanet_mnv2_fpn.py --eval-only \
        train.init_checkpoint=output/Examples/retinanet_mnv2_fpn/model_final.pth

clean_anchors_retinanet_mnv2_fpn.py and swn_retinanet_mnv2_fpn.py are this config with the methods.
"""
import os

from detkit.data import register_coco_dataset

from ..common.cpu_schedule import lr_multiplier, optimizer, train
from ..common.data.coco_format import dataloader, test
from ..common.models.retinanet_mnv2_fpn import model

# ---- your data: edit these lines --------------------------------------------------------------
# datasets/my_data/annotations/{train,val}.json (COCO instances format), images in
# datasets/my_data/{train,val}/ (the folders the json's file_name entries are relative to);
# $DETECTRON2_DATASETS moves the datasets/ folder, as for Detectron2's own datasets.
DATA = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "my_data")
register_coco_dataset("my_data_train", f"{DATA}/annotations/train.json", f"{DATA}/train", replace=True)
register_coco_dataset("my_data_val", f"{DATA}/annotations/val.json", f"{DATA}/val", replace=True)
dataloader.train.dataset.names = "my_data_train"
dataloader.test.dataset.names = "my_data_val"
model.num_classes = 3  # the number of categories in the json (train_net.py refuses fewer)
# ------------------------------------------------------------------------------------------------

train.output_dir = "./output/Examples/retinanet_mnv2_fpn"
