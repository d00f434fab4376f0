#!/usr/bin/env python
"""See what a model detects (Detectron2's demo/demo.py for LazyConfig models): pictures of the
boxes, classes and scores, plus every detection as a COCO-results json and a CSV.

    python tools/predict.py --config-file CFG --checkpoint PTH --input IMG|GLOB|FOLDER [...]
        [--output output/predict] [--score-thresh 0.1] [--device cpu|cuda] [--tta] [--soft-nms]
        [--tile SIZE --overlap PX] [--batch-size 4] [--no-pictures] [--no-progress] [key=value ...]

Each image goes through the config's test augmentations (dataloader.test.mapper.augmentations)
and its boxes are mapped back to the image's own pixels. --tta and --soft-nms are shorthands for
the overrides test.aug.enabled=True and test.soft_nms.enabled=True; every other test.* key (e.g.
test.soft_nms.method=gaussian, test.aug.min_sizes=[300,400]) and any config key is a key=value
override as in train_net.py. --tile cuts each image into SIZE-px tiles sharing --overlap px (last
row/column aligned with the border), predicts --batch-size tiles at a time and merges the boxes
across tile borders (detkit.predict: a box cut by a tile border that another tile sees whole is
dropped, then NMS, or Soft-NMS with --soft-nms); choose --overlap larger than the objects.

Writes to OUTPUT: <image name>.png per image (Detectron2's Visualizer; class names from the
config's test dataset), predictions.csv (file,xmin,ymin,xmax,ymax,label,score), coco_instances_results.json
(COCO results, image_id = position in images.json) and images.json. Detections below
--score-thresh (default 0.1, DeepForest's and the tree-crown P40/R40 threshold; 0 for all) are left
out of every output. An image that cannot be read is named and skipped, the others still run, and
the command then exits 1 with a summary line naming them; a checkpoint that does not fit the
config, a missing file or a bad option exits 2 with one line.
"""
import argparse
import logging
import os
import sys
import time

import detkit  # noqa: F401  (registers the built-in datasets)
from detkit.analysis import load_config, load_model
from detkit.data import DatasetError
from detkit.predict import Predictor, list_images, predict_files


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the checkpoint's LazyConfig")
    parser.add_argument("--checkpoint", required=True, help="model weights (.pth)")
    parser.add_argument("--input", nargs="+", required=True, help="image files, glob patterns or folders")
    parser.add_argument("--output", default="output/predict", help="output folder (default %(default)s)")
    parser.add_argument("--score-thresh", type=float, default=0.1,
                        help="leave out detections scoring below this (default %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the config's train.device, "
                        "CPU without a GPU)")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation (= test.aug.enabled=True)")
    parser.add_argument("--soft-nms", action="store_true", help="Soft-NMS (= test.soft_nms.enabled=True)")
    parser.add_argument("--tile", type=int, default=None, metavar="SIZE", help="cut images into SIZE-px tiles")
    parser.add_argument("--overlap", type=int, default=None, metavar="PX",
                        help="pixels shared by neighbouring tiles (with --tile; default SIZE // 8)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles (or images) per forward pass")
    parser.add_argument("--no-pictures", action="store_true", help="only the CSV and json files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)
    if args.overlap is not None and args.tile is None:
        parser.error("--overlap needs --tile")
    if args.tile is not None and args.overlap is None:
        args.overlap = args.tile // 8
    return args


def predict(args):
    """Run the prediction; returns predict_files' summary (plus "seconds")."""
    opts = list(args.opts)
    opts += ["test.aug.enabled=True"] if args.tta else []
    opts += ["test.soft_nms.enabled=True"] if args.soft_nms else []
    cfg = load_config(args.config_file, opts)
    files, problems = list_images(args.input)
    if not files:
        raise ValueError("--input: no image to predict (" + "; ".join(f"{i}: {r}" for i, r in problems) + ")")
    model = load_model(cfg, args.checkpoint, device=args.device)
    start = time.perf_counter()
    summary = predict_files(
        Predictor(cfg, model), files, args.output, args.score_thresh, tile=args.tile,
        overlap=args.overlap or 0, batch_size=args.batch_size, progress=not args.no_progress,
        draw=not args.no_pictures,
    )
    summary["failed"] = list(problems) + summary["failed"]
    summary["seconds"] = time.perf_counter() - start
    return summary


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        summary = predict(args)
    except (FileNotFoundError, KeyError, IndexError, ValueError, TypeError, DatasetError) as e:
        print(f"predict: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"predict: {summary['images']} images, {summary['detections']} detections with score >= "
          f"{args.score_thresh:g} in {summary['seconds']:.1f} s -> {os.path.abspath(args.output)} "
          f"({', '.join(os.path.basename(p) for p in summary['outputs'].values())}"
          f"{'' if args.no_pictures else ', one .png per image'})")
    if summary["failed"]:
        print(f"predict: {len(summary['failed'])} input(s) skipped: "
              + "; ".join(reason if reason.startswith(str(item)) else f"{item}: {reason}"
                          for item, reason in summary["failed"]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
