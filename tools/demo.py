#!/usr/bin/env python
"""`make demo`: train the CPU-sized tree-crown detectors (the stock RetinaNet baseline and each
method on the same schedule, seed 0), evaluate them with COCOEvaluator and print their AP table, each
method's row followed by its difference to the first (baseline) row, and write a model-zoo style
report (tools/report.py: table, provenance, training curves) with the runs' PR curves to
OUTPUT_DIR/report/, ending with the trained models' predictions on one validation tile beside its
ground truth (OUTPUT_DIR/report/predictions.png, detkit.predict.compare_models_on_image).

    python tools/demo.py [--output-dir output/demo] [--config-file configs/TreeCrowns/a.py ...]
                         [--jobs J] [--threads T] [key=value ...]

The runs are those of a one-seed study (detkit.study.run_study): each config trains with
`train_net.py --resume` into OUTPUT_DIR/<config name>, all of them at once (--jobs, default one per
config) with one intra-op thread each, so the numbers are those of `train.max_iter=400` at one
thread whatever the machine's core count. An interrupted demo continues where it stopped; a
finished run is skipped. Every run gets `train.max_iter=400` (DEMO_OPTS) and then the extra
`key=value` opts, which win (e.g. `train.max_iter=500` for the configs' own schedule).
"""
import argparse
import math
import os
import time

from tabulate import tabulate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = [
    "configs/TreeCrowns/retinanet_mnv2_fpn.py",
    "configs/TreeCrowns/clean_anchors_retinanet_mnv2_fpn.py",
    "configs/TreeCrowns/swn_retinanet_mnv2_fpn.py",
]
# The three runs train at once, one thread each (~19 min on 2 cores, docs/study_parallelism.md).
# The schedule's warmup / step follow max_iter (fractions).
DEMO_OPTS = ["train.max_iter=400"]
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "AP40", "P40", "R40"]


def _fmt(value: float, sign: bool = False) -> str:
    # COCOeval gives NaN for a size bucket without objects (no large crowns here)
    return "-" if math.isnan(value) else (f"{value:+.2f}" if sign else f"{value:.2f}")


def load_results(output_dir: str):
    from detkit.runs import read_eval_results

    saved = read_eval_results(output_dir, strict=True)
    return saved["iterations_trained"], saved["results"]["bbox"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="output/demo")
    parser.add_argument(
        "--config-file", dest="configs", action="append", help="repeat for several (default: %(default)s)"
    )
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: one per config)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per run (default 1)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value overrides for every run")
    args = parser.parse_args()
    args.configs = args.configs or DEFAULT_CONFIGS

    from detkit.study import RunSpec, run_study
    from detkit.study.runner import config_name

    specs = [RunSpec(config_name(c), c, 0, os.path.abspath(os.path.join(args.output_dir, config_name(c))))
             for c in args.configs]
    opts = DEMO_OPTS + list(args.opts)
    # seed 0 is each config's own train.seed; the demo passes it like a study does
    start = time.perf_counter()
    outcome = run_study(specs, opts, args.output_dir, jobs=args.jobs or len(specs), threads=args.threads, poll=5.0)
    minutes = (time.perf_counter() - start) / 60
    if outcome["failed"]:
        raise SystemExit(f"demo: {', '.join(s.label for s in outcome['failed'])} failed (see above)")

    rows, baseline = [], None
    for spec in specs:
        iters, bbox = load_results(spec.output_dir)
        rows.append([spec.name, iters] + [_fmt(bbox.get(m, math.nan)) for m in METRICS] + [spec.output_dir])
        if baseline is None:
            baseline = bbox
        else:
            diff = [_fmt(bbox.get(m, math.nan) - baseline.get(m, math.nan), sign=True) for m in METRICS]
            rows.append([f"  vs {rows[0][0]}", ""] + diff + [""])

    table = tabulate(
        rows, headers=["model", "iters"] + [f"box {m}" for m in METRICS] + ["outputs"], tablefmt="github"
    )
    print(f"\nTree-crown val (12 tiles of 400x400; COCO box AP, and AP / precision / recall at IoU 0.4), "
          f"one seed; {minutes:.1f} min:\n" + table)
    print(
        "\nEach output folder holds model_final.pth, metrics.json, log.txt, config.yaml, "
        "eval_results.json, inference/coco_instances_results.json and TensorBoard events."
    )
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    report = write_report([row[-1] for row in rows if row[-1]], os.path.join(args.output_dir, "report"))
    picture = write_predictions_picture(specs, opts, os.path.join(args.output_dir, "report"))
    print(f"\nModel-zoo style report (table, provenance, training and PR curves): {report}")
    print(f"What the models detect on one validation tile, beside its ground truth: {picture}")


def write_report(output_dirs, out_dir: str) -> str:
    """detkit.report's report (tools/report.py) of the runs plus their PR curves (NoisyAnchors Fig. 2); returns the
    path of report.md."""
    from detkit.evaluation import write_pr_curves
    from detkit.report import build_report

    build_report(output_dirs, out_dir, title="make demo: tree-crown detectors")
    write_pr_curves(output_dirs, os.path.join(out_dir, "pr_curves.png"))
    path = os.path.join(out_dir, "report.md")
    with open(path, "a") as f:
        f.write("\n## Precision-recall curves\n\n![PR curves](pr_curves.png)\n")
    return path


def write_predictions_picture(specs, opts, out_dir: str, score_thresh: float = 0.3) -> str:
    """The runs' final models on the validation tile with the most ground-truth boxes, beside the
    ground truth (detkit.predict.compare_models_on_image), as out_dir/predictions.png, linked from
    report.md; returns the PNG's path."""
    from detkit.predict import compare_models_on_image

    models = [(s.name, s.config, os.path.join(s.output_dir, "model_final.pth")) for s in specs]
    path = compare_models_on_image(models, os.path.join(out_dir, "predictions.png"), opts=opts,
                                   score_thresh=score_thresh)
    with open(os.path.join(out_dir, "report.md"), "a") as f:
        f.write(f"\n## What the models detect\n\nOne validation tile: ground truth, then each model's detections "
                f"with score >= {score_thresh:g} (`python tools/predict.py` draws any image).\n\n"
                "![predictions](predictions.png)\n")
    return path


if __name__ == "__main__":
    main()
