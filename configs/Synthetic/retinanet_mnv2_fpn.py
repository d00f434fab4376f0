"""RetinaNet, MobileNetV2-FPN, on the synthetic noisy-box set (3 classes, 128x128)."""
from ..common.cpu_schedule import lr_multiplier, optimizer, train
from ..common.data.synthetic import dataloader, test
from ..common.models.retinanet_mnv2_fpn import model

model.num_classes = 3
model.anchor_generator.sizes = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [8, 16, 32, 64, 128]]
train.output_dir = "./output/Synthetic/retinanet_mnv2_fpn"
