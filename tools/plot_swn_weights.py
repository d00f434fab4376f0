#!/usr/bin/env python
"""What a trained SWN RetinaNet's sample weighting network does ("Learning a Unified Sample Weighting
Network", Fig. 5): the classification loss of positive anchors by IoU, and the learned weights as a
function of each of the SWN's inputs.

    python tools/plot_swn_weights.py --config-file CFG --checkpoint PTH [--dataset NAME]
        [--num-images N] [--batch-size B]
        [--baseline-config CFG --baseline-checkpoint PTH [--baseline-opts KEY=VALUE ...]]
        [--out DIR] [--dpi 90] [key=value ...]

The model runs on the first N images of the dataset (default all) with their ground truth, B at a
time (default the config's training batch size: the SWN averages m_cls over a batch), without
augmentation. For every positive anchor (RetinaNet's IoU matcher, as in training) the tool
recomputes exactly what `SWNRetinaNet.losses` gives the SWN (focal loss, 4-d smooth-L1, IoU of the
decoded box with its GT, probability of the GT class; detached) and runs the model's SWN on it.
A stock RetinaNet passed as --baseline-* adds its loss distribution to Fig. 5 (weights 1).

Writes to OUT (default output/plot_swn_weights): swn_fig5_loss_by_iou.png,
swn_weight_vs_inputs.png and swn_samples.npz (the collected per-positive arrays).
"""
import argparse
import os

import numpy as np
import torch

import detkit  # noqa: F401  (registers the built-in datasets)
from detkit.config_tools import config_test_dataset
from detkit.analysis import annotated_inputs, batches, load_config, load_model
from detkit.utils import run_tool
from detkit.visualization import save_figure
from swn import SWNRetinaNet
from swn.analysis import collect_positive_samples
from swn.plots import DEFAULT_IOU_EDGES, input_sweeps, loss_by_iou_figure, weight_vs_inputs_figure


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="an SWN RetinaNet LazyConfig")
    parser.add_argument("--checkpoint", required=True, help="its trained weights (.pth)")
    parser.add_argument("--dataset", default=None,
                        help="registered dataset name (default: the config's test dataset, dataloader.test.dataset.names)")
    parser.add_argument("--num-images", type=int, default=None, help="first N images (default: all)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per SWN batch (default: dataloader.train.total_batch_size)")
    parser.add_argument("--baseline-config", help="a stock RetinaNet config to compare with (optional)")
    parser.add_argument("--baseline-checkpoint", help="its weights")
    parser.add_argument("--baseline-opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of --baseline-config")
    parser.add_argument("--baseline-name", default="stock RetinaNet", help="its name in the legend")
    parser.add_argument("--iou-edges", type=float, nargs="+", default=list(DEFAULT_IOU_EDGES),
                        help="IoU bin edges (last bin closed)")
    parser.add_argument("--out", default="output/plot_swn_weights", help="output folder")
    parser.add_argument("--dpi", type=int, default=90)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value overrides of --config-file")
    args = parser.parse_args(argv)
    if (args.baseline_config is None) != (args.baseline_checkpoint is None):
        parser.error("--baseline-config and --baseline-checkpoint go together")
    return args


def _samples(cfg, model, args, batch_size):
    from detectron2.data import DatasetCatalog

    if args.dataset not in DatasetCatalog.list():
        raise KeyError(f"--dataset {args.dataset!r} is not registered")
    total = len(DatasetCatalog.get(args.dataset))
    num = total if args.num_images is None else min(args.num_images, total)
    if num < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    inputs = annotated_inputs(cfg, model, args.dataset, list(range(num)))
    return collect_positive_samples(model, batches(inputs, batch_size)), num


def plot_swn_weights(args) -> list:
    """Collect the samples and make the pictures; returns the paths written."""
    cfg = load_config(args.config_file, args.opts)
    if args.dataset is None:
        args.dataset = config_test_dataset(cfg)  # the config's test dataset
    model = load_model(cfg, args.checkpoint)
    if not isinstance(model, SWNRetinaNet):
        raise ValueError(
            f"--config-file {args.config_file} builds a {type(model).__name__}, not an SWNRetinaNet "
            "(for a stock baseline use --baseline-config)"
        )
    batch_size = args.batch_size or int(cfg.dataloader.train.total_batch_size)
    samples, num = _samples(cfg, model, args, batch_size)
    if samples.iou.numel() == 0:
        raise ValueError(f"no positive anchors in the first {num} images of {args.dataset}")
    name = os.path.splitext(os.path.basename(args.config_file))[0]
    runs = {f"SWN ({name})": samples}
    if args.baseline_config:
        base_cfg = load_config(args.baseline_config, args.baseline_opts)
        base_model = load_model(base_cfg, args.baseline_checkpoint)
        runs[args.baseline_name], _ = _samples(base_cfg, base_model, args, batch_size)

    w = model.weighting
    header = (
        f"{name} ({args.checkpoint}), {args.dataset}: {num} images in batches of {batch_size}, "
        f"{len(samples.iou)} positive anchors; weights {w.form}, m_cls averaged over '{w.cls_average}'"
    )
    written = []
    fig = loss_by_iou_figure(runs, args.iou_edges, title=header)
    written.append(save_figure(fig, os.path.join(args.out, "swn_fig5_loss_by_iou.png"), dpi=args.dpi))
    with torch.no_grad():
        sweeps = input_sweeps(model.swn, samples)
    fig = weight_vs_inputs_figure(samples, sweeps, form=w.form, title=header)
    written.append(save_figure(fig, os.path.join(args.out, "swn_weight_vs_inputs.png"), dpi=args.dpi))
    npz = os.path.join(args.out, "swn_samples.npz")
    np.savez_compressed(npz, **{k: v.numpy() for k, v in samples._asdict().items()})
    written.append(npz)
    return written


def main(argv=None):
    args = parse_args(argv)
    run_tool("plot_swn_weights", lambda: plot_swn_weights(args))


if __name__ == "__main__":
    main()
