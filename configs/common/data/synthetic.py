"""The seeded synthetic noisy-box set (128x128 images, 3 classes); see detkit/data/synthetic.py."""
from .treecrowns import dataloader, test

dataloader.train.dataset.names = "synthetic_train"
dataloader.train.mapper.augmentations = [
    dataloader.train.mapper.augmentations[0]  # horizontal flip only: sticks have a direction
]
dataloader.test.dataset.names = "synthetic_val"
test.aug.min_sizes = [96, 128, 160]  # around the 128 px images
test.aug.max_size = 400
