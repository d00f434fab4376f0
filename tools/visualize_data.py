#!/usr/bin/env python
"""The training images with their ground-truth boxes, as the training loader sees them (after the
config's training augmentations, through its dataloader.train mapper) or as annotated: Detectron2's
tools/visualize_data.py for LazyConfig files.

    python tools/visualize_data.py --config-file CFG [--output output/visualize_data] [--num-images 8]
        [--source dataloader|annotation] [--seed 0] [key=value ...]

--source dataloader (default) applies dataloader.train.mapper to the first N images of
dataloader.train.dataset (the random augmentations, e.g. the tree crowns' flips, seeded by --seed);
--source annotation draws the stored images and annotations. Writes OUTPUT/<NNN>_<image name>.png
(boxes and class names by Detectron2's Visualizer).
"""
import argparse
import sys

import detkit  # noqa: F401  (registers the built-in datasets)
from detkit.analysis import load_config
from detkit.data import DatasetError
from detkit.predict import ImageReadError
from detkit.visualization import DATA_SOURCES, draw_dataset_samples


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a LazyConfig with dataloader.train")
    parser.add_argument("--output", default="output/visualize_data", help="output folder (default %(default)s)")
    parser.add_argument("--num-images", type=int, default=8, help="how many images (default %(default)s)")
    parser.add_argument("--source", choices=DATA_SOURCES, default="dataloader",
                        help="the training mapper's output or the raw annotations (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random augmentations")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.opts)
        written = draw_dataset_samples(cfg, args.output, args.num_images, args.source, args.seed)
    except (FileNotFoundError, KeyError, IndexError, ValueError, DatasetError, ImageReadError) as e:
        sys.exit(f"visualize_data: {e}")
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
