#!/usr/bin/env python
"""`make bench`: what CleanAnchors and SWN cost, measured against the stock Detectron2 models.

    python tools/benchmark.py [--iters 30] [--warmup 5] [--json out.json] [--sections train,infer,assign,cuda]
    python tools/benchmark.py --group STOCK_CONFIG METHOD_CONFIG... [--image-size H W] [key=value ...]
    python tools/benchmark.py --device cuda          # adds R-50-FPN AMP throughput at 800x1333

A benchmark, not a test: it prints Markdown tables (stdout; progress on stderr) and, with --json,
writes every number. Sections:

train   Training-step time (forward + backward + optimizer step, as Detectron2's SimpleTrainer runs
        it, with each config's optimizer, gradient clipping and LR schedule: SWN's SGD + Adam) of
        each group's models: by default stock RetinaNet / CleanAnchors / SWN and stock Faster R-CNN /
        CleanAnchors-RPN / SWN Faster R-CNN, the MobileNetV2-FPN tree-crown configs on the real
        400x400 tiles, 4 per batch as in training. All models of a group live in one process, start
        from the same weights (the stock model's; the SWN's own layers are the only extra ones) and
        are stepped round-robin on the same batch and the same RNG seed at every iteration, so that
        machine noise hits them alike. The first --warmup rounds are dropped; reported: the median
        wall-clock s/iter, its ratio to the stock model's median with a 95 % bootstrap interval
        (rounds resampled in pairs), the same ratio of process CPU time (less sensitive to other
        processes on a shared machine), and the peak tensor memory of one step (CPU: the PyTorch
        allocator's live tensor bytes, from torch.profiler's memory events, on top of the
        parameters, gradients and optimizer state; CUDA: torch.cuda.max_memory_allocated).
        --control adds a second copy of each stock model: its "ratio" is the noise level.
infer   Inference time of each method's checkpoint loaded into the stock model (SWN parameters
        dropped by swn.checkpoint.export_stock_checkpoint, strict load) against the stock model,
        same batches, round-robin; the models as initialised, so that the shared weights are the
        same (--infer-trained: as the training section left them, when the outputs, and with them
        the post-processing work, differ); and whether the stock model with the method's weights
        gives bit-identical detections to the method's own model (checked with the score threshold
        at 0 so that there are detections to compare).
assign  The label-assignment / weighting step alone as the number of ground-truth boxes of one
        image grows (--num-boxes), at 800x1333 with the anchors of the R-50-FPN RetinaNet configs
        (Detectron2's DefaultAnchorGenerator: 201,600 anchors, 80 classes): the model's anchor
        labelling (stock and SWN: RetinaNet.label_anchors, i.e. pairwise IoU + Matcher;
        CleanAnchors: top-N candidates, in chunks of ground truths) and then its `losses`
        (CleanAnchors: cleanliness scores, soft labels, re-weighting; SWN: the SWN's inputs and
        network), forward only, on random predictions; time and peak tensor memory of each.
cuda    With --device cuda: training throughput (images/s) of the R-50-FPN RetinaNets at 800x1333,
        2 images per iteration, AMP (Detectron2's AMPTrainer), next to Detectron2's model-zoo figure
        for RetinaNet R50-FPN 1x (0.205 s/iter at 2 images per V100, about 9.8 images/s). Without a
        GPU this prints that it was skipped.
"""
import argparse
import json
import os
import time
from dataclasses import asdict

import torch

from detkit.benchmark.assignment import ASSIGN_IMAGE_SIZE, DEFAULT_NUM_BOXES, R50_RETINANETS, benchmark_assignment
from detkit.benchmark.inference import benchmark_inference
from detkit.benchmark.models import build_models, config_name, load_batches, log
from detkit.benchmark.tables import (MODEL_ZOO_IMAGES_PER_GPU, format_assignment, format_inference,
                                     format_throughput, format_training, machine_description)
from detkit.benchmark.training import benchmark_training

DEFAULT_GROUPS = {
    "RetinaNet": [
        "configs/TreeCrowns/retinanet_mnv2_fpn.py",
        "configs/TreeCrowns/clean_anchors_retinanet_mnv2_fpn.py",
        "configs/TreeCrowns/swn_retinanet_mnv2_fpn.py",
    ],
    "Faster R-CNN": [
        "configs/TreeCrowns/faster_rcnn_mnv2_fpn.py",
        "configs/TreeCrowns/clean_anchors_faster_rcnn_mnv2_fpn.py",
        "configs/TreeCrowns/swn_faster_rcnn_mnv2_fpn.py",
    ],
}

SECTIONS = ("train", "infer", "assign", "cuda")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--group", nargs="+", action="append", metavar="CONFIG",
        help="a stock config followed by method configs; repeatable "
        "(default: the TreeCrowns RetinaNet and Faster R-CNN groups)",
    )
    parser.add_argument(
        "--control", action="store_true",
        help="also run a second copy of each group's stock model (A/A control: its ratio is the noise level)",
    )
    parser.add_argument(
        "--dataset", default="treecrowns_train", help="registered dataset the training batches come from"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-batches", type=int, default=None, help="distinct batches cycled through (default: all)")
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), default=None,
        help="resize the images (default: as stored)",
    )
    parser.add_argument("--iters", type=int, default=30, help="timed training iterations per model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training iterations first")
    parser.add_argument("--infer-iters", type=int, default=20)
    parser.add_argument(
        "--infer-trained", action="store_true",
        help="time the checkpoints as the training section left them instead of as initialised (same shared "
        "weights); their outputs then differ, and so does the post-processing work",
    )
    parser.add_argument("--infer-warmup", type=int, default=2)
    parser.add_argument("--num-boxes", type=int, nargs="+", default=list(DEFAULT_NUM_BOXES))
    parser.add_argument("--assign-image-size", type=int, nargs=2, metavar=("H", "W"), default=list(ASSIGN_IMAGE_SIZE))
    parser.add_argument("--assign-configs", nargs="+", default=R50_RETINANETS)
    parser.add_argument("--assign-reps", type=int, default=3)
    parser.add_argument("--cuda-iters", type=int, default=50)
    parser.add_argument("--cuda-warmup", type=int, default=10)
    parser.add_argument("--cuda-configs", nargs="+", default=R50_RETINANETS)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    parser.add_argument("opts", nargs="*", default=[], help="key=value overrides applied to every config (strict)")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    args.sections = sections
    return args


def run(args) -> dict:
    """Run the selected sections, printing each Markdown table (and rewriting the --json file) as
    soon as it is complete; returns {"settings", "machine", section: list of result dicts, ...}."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA device is visible")
    groups = DEFAULT_GROUPS
    if args.group:  # named after their stock config
        groups = {f"{config_name(g[0])}{f' ({i + 1})' if i else ''}": g for i, g in enumerate(args.group)}
    load_start = os.getloadavg()
    started = time.perf_counter()
    out = {"settings": dict(vars(args)), "machine": machine_description(device), "train": [], "infer": []}

    def emit(*lines: str) -> None:
        print("\n".join(lines) + "\n", flush=True)
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(out, f, indent=2, default=str)

    emit(f"# Benchmark ({out['machine']})")
    if "train" in args.sections or "infer" in args.sections:
        batches = load_batches(args.dataset, args.batch_size, args.num_batches, args.image_size)
        size = "x".join(str(s) for s in batches[0][0]["image"].shape[1:])
        for name, configs in groups.items():
            if args.control:
                configs = [configs[0], *configs]
            runners = []
            if "train" in args.sections:
                log(f"[train] {name}: {', '.join(config_name(c) for c in configs)}")
                results, runners = benchmark_training(
                    name, configs, batches, args.iters, args.warmup, device, args.opts, args.seed
                )
                out["train"] += [asdict(r) for r in results]
                emit(
                    f"## {name}: training step ({args.dataset}, {len(batches)} batch(es) of {args.batch_size} "
                    f"images at {size}; {args.warmup} warm-up + {args.iters} timed iterations per model, "
                    "round-robin)",
                    "",
                    format_training(results),
                )
            if "infer" in args.sections:
                log(f"[infer] {name}")
                if args.infer_trained and runners:
                    models, weights = [r.bench for r in runners], f"after the {args.warmup + args.iters} training steps"
                else:
                    models, weights = build_models(configs, args.opts, device, args.seed), "as initialised"
                inference = benchmark_inference(name, models, batches, args.infer_iters, args.infer_warmup, device)
                out["infer"] += [asdict(r) for r in inference]
                emit(
                    f"## {name}: inference of each method's checkpoint in the stock model (weights {weights}; "
                    f"{args.infer_warmup} warm-up + {args.infer_iters} timed batches of {args.batch_size} per model)",
                    "",
                    format_inference(inference),
                )
            del runners

    if "assign" in args.sections:
        log("[assign]")
        assign = benchmark_assignment(
            args.assign_configs, args.num_boxes, args.assign_image_size, args.assign_reps, args.opts, args.seed
        )
        out["assign"] = [asdict(r) for r in assign]
        emit(
            f"## Label assignment + losses of one {args.assign_image_size[0]}x{args.assign_image_size[1]} image "
            f"({assign[0].num_anchors} anchors; CPU, forward only; median of {args.assign_reps} round-robin rounds "
            "after a warm-up one, from 500 boxes on 1 round)",
            "",
            format_assignment(assign),
        )

    if "cuda" in args.sections:
        title = "## Training throughput on a GPU (800x1333, R-50-FPN, AMP"
        if not (device.startswith("cuda") and torch.cuda.is_available()):
            line = "no CUDA device: skipped (run with --device cuda on a GPU machine)"
            log(f"[cuda] {line}")
            out["cuda"] = {"skipped": line}
            emit(title + ")", "", line)
        else:
            log("[cuda] R-50-FPN RetinaNets, 800x1333, AMP")
            cuda_batches = load_batches(args.dataset, MODEL_ZOO_IMAGES_PER_GPU, None, ASSIGN_IMAGE_SIZE)
            results, runners = benchmark_training(
                "R-50-FPN AMP", args.cuda_configs, cuda_batches, args.cuda_iters, args.cuda_warmup, device,
                args.opts, args.seed, amp=True,
            )
            del runners
            out["cuda"] = [asdict(r) for r in results]
            emit(
                f"{title}; {args.cuda_warmup} warm-up + {args.cuda_iters} timed iterations of "
                f"{MODEL_ZOO_IMAGES_PER_GPU} images per model)",
                "",
                format_throughput(results),
            )

    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()
    out["elapsed_s"] = elapsed
    out["load_average"] = {"start": load_start, "end": load_end}
    emit(
        f"Total time {elapsed / 60:.1f} min; load average (1 min) {load_start[0]:.2f} at the start, "
        f"{load_end[0]:.2f} at the end ({os.cpu_count()} cores: a load above that means the machine was shared)."
    )
    if args.json:
        log(f"results written to {args.json}")
    return out


def main(argv=None):
    run(parse_args(argv))


if __name__ == "__main__":
    main()
