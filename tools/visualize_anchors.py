#!/usr/bin/env python
"""Pictures of CleanAnchors' candidate anchors on one dataset image ("Learning from Noisy Anchors",
Figs. 1 and 3): the candidates coloured by their cleanliness soft label and by their re-weighting
factor, and both against the anchor's IoU with its ground truth.

    python tools/visualize_anchors.py --config-file CFG --checkpoint PTH [--dataset NAME]
        [--image-index 0] [--boxes anchors|predictions] [--crop X0 Y0 X1 Y1] [--out DIR] [--dpi 90]
        [--no-scatter] [key=value ...]

Any RetinaNet checkpoint works (cleanliness comes from the model's own outputs); a
CleanAnchorsRetinaNet config uses its own N, assigner, alpha and gamma, any other RetinaNet the
method's defaults (top-30 candidates per ground truth, alpha 0.75, gamma 1). The model runs on the
image with its ground truth (the config's test augmentations, none for the CPU configs) and the
candidates are scored with `clean_anchors.scores.candidate_scores`, exactly as in training.

Writes to OUT (default output/visualize_anchors): anchors_soft_labels.png, anchors_reweighting.png
(the candidates as thin boxes, with --crop only those of ground truths centred in the region;
weights below 1 blue, above 1 red) and anchors_vs_iou.png (soft label and weight of all the
image's candidates against their anchor's IoU with the ground truth; unless --no-scatter).
"""
import argparse
import os

import detkit  # noqa: F401  (registers the built-in datasets)
from detectron2.data.detection_utils import convert_image_to_rgb

from clean_anchors.analysis import candidate_anchors, cleanliness_settings
from clean_anchors.plots import (
    BOX_KINDS,
    anchors_figure,
    candidates_in_region,
    candidates_of_image,
    iou_scatter_figure,
)
from detkit.config_tools import config_test_dataset
from detkit.analysis import annotated_inputs, load_config, load_model
from detkit.utils import run_tool
from detkit.visualization import save_figure


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the checkpoint's LazyConfig (any RetinaNet)")
    parser.add_argument("--checkpoint", required=True, help="model weights (.pth)")
    parser.add_argument("--dataset", default=None,
                        help="registered dataset name (default: the config's test dataset, dataloader.test.dataset.names)")
    parser.add_argument("--image-index", type=int, default=0, help="index of the image in the dataset")
    parser.add_argument("--boxes", choices=BOX_KINDS, default="anchors",
                        help="draw the candidate anchors or the boxes the model predicts from them")
    parser.add_argument("--crop", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                        help="show only this region of the (input) image and the candidates of the ground "
                             "truths centred in it")
    parser.add_argument("--out", default="output/visualize_anchors", help="output folder")
    parser.add_argument("--dpi", type=int, default=90)
    parser.add_argument("--no-scatter", action="store_true", help="skip anchors_vs_iou.png")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    return parser.parse_args(argv)


def visualize_anchors(args) -> list:
    """Make the pictures; returns the paths written."""
    cfg = load_config(args.config_file, args.opts)
    if args.dataset is None:
        args.dataset = config_test_dataset(cfg)  # the config's test dataset
    model = load_model(cfg, args.checkpoint)
    inputs = annotated_inputs(cfg, model, args.dataset, [args.image_index])
    topn, assigner, cleanliness = cleanliness_settings(model)
    cand = candidates_of_image(candidate_anchors(model, inputs), 0)
    image = convert_image_to_rgb(inputs[0]["image"].permute(1, 2, 0).numpy(), model.input_format)
    gt_boxes = inputs[0]["instances"].gt_boxes.tensor.numpy()
    region = args.crop
    shown, shown_gt = (cand, gt_boxes) if region is None else candidates_in_region(cand, gt_boxes, region)

    name = os.path.splitext(os.path.basename(inputs[0]["file_name"]))[0]
    drawn = "candidate anchors" if args.boxes == "anchors" else "boxes predicted from the candidate anchors"
    settings = (
        f"candidates: {'top-%d per GT' % topn if assigner == 'topn' else 'IoU matcher'}, "
        f"alpha={cleanliness.alpha}, gamma={cleanliness.gamma}, soft labels '{cleanliness.soft_label_mode}'"
    )
    source = f"{type(model).__name__}, {args.dataset}[{args.image_index}] ({name})"
    header = (
        f"{source}{'' if region is None else ' crop (%g, %g, %g, %g)' % tuple(region)}: "
        f"{len(shown_gt)} GT (dashed), {len(shown.anchors)} {drawn}\n{settings}"
    )
    written = []
    for value, file_name in (("soft_labels", "anchors_soft_labels.png"), ("weights", "anchors_reweighting.png")):
        fig = anchors_figure(image, shown, shown_gt, value, boxes=args.boxes, title=header, region=region)
        written.append(save_figure(fig, os.path.join(args.out, file_name), dpi=args.dpi))
    if not args.no_scatter:  # all candidates of the image, also with --crop
        fig = iou_scatter_figure(cand, title=f"{source}: all {len(cand.anchors)} candidates\n{settings}")
        written.append(save_figure(fig, os.path.join(args.out, "anchors_vs_iou.png"), dpi=args.dpi))
    return written


def main(argv=None):
    args = parse_args(argv)
    run_tool("visualize_anchors", lambda: visualize_anchors(args))


if __name__ == "__main__":
    main()
