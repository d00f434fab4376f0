"""The seeded synthetic noisy-box set (128x128 images, 3 classes); see detkit/data/synthetic.py."""
from .treecrowns import dataloader

dataloader.train.dataset.names = "synthetic_train"
dataloader.train.mapper.augmentations = [
    dataloader.train.mapper.augmentations[0]  # horizontal flip only: sticks have a direction
]
dataloader.test.dataset.names = "synthetic_val"
