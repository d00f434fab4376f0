#!/usr/bin/env python
"""Convert torchvision-layout ImageNet ResNet/ResNeXt weights to a Detectron2 backbone checkpoint.

    python tools/convert_torchvision_resnet.py resnext101_32x4d.pth weights/X-101-32x4d-torchvision.pkl

The X-101-32x4d configs (configs/COCO-Detection/*X_101_32x4d*) read weights/X-101-32x4d-torchvision.pkl.
Sources of ImageNet X-101-32x4d weights in this layout: mmcv's open-mmlab://resnext101_32x4d
(https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d-a5af3160.pth, what the SWN
authors' mmdetection code loads) or timm's resnext101_32x4d. They expect RGB input normalised with
torchvision's ImageNet mean/std, which those configs set.
"""
import argparse
import os
import pickle
import sys

import torch

from detkit.modeling.convert import torchvision_resnet_to_detectron2, unwrap_state_dict


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="torch.save-d state dict (.pth), torchvision layout")
    parser.add_argument("dst", help="output .pkl for train.init_checkpoint")
    args = parser.parse_args(argv)
    checkpoint = torch.load(args.src, map_location="cpu", weights_only=True)
    try:
        converted = torchvision_resnet_to_detectron2(unwrap_state_dict(checkpoint))
    except ValueError as e:
        sys.exit(f"{args.src}: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    with open(args.dst, "wb") as f:
        pickle.dump(converted, f)
    print(f"{args.dst}: {len(converted['model'])} tensors")


if __name__ == "__main__":
    main()
