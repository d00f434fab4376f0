#!/usr/bin/env python
"""Classification confidence vs. IoU of a dense detector's most confident predictions before and
after NMS (NoisyAnchors Table 7), for one or several checkpoints side by side.

    python tools/analyze_confidence_iou.py --config-file CFG --checkpoint PTH
    python tools/analyze_confidence_iou.py \\
        --checkpoint base=output/x/model_final.pth --checkpoint clean=output/y/model_final.pth \\
        [--config-file CFG | --config-file CFG_BASE --config-file CFG_CLEAN] [--dataset NAME] \\
        [--num-images N] [--top-fraction 0.02] [--class-agnostic] [--json OUT] [key=value ...]

For each checkpoint (a RetinaNet-family model: RetinaNet, CleanAnchors, SWN RetinaNet, FCOS) the
model's own inference runs twice over the images: once with NMS switched off
(test_nms_thresh=1.0, no per-image limit: the candidates the stock inference hands to NMS, i.e.
after the per-level top-k and score threshold) and once as configured. Of each set the top
fraction (default 2 %) most confident predictions, pooled over all images, give the mean
confidence and the mean IoU with the matched ground truth (best-overlapping box of the predicted
class); the Pearson correlation between confidence and IoU is computed on the same sets. See
detkit/evaluation/confidence_iou.py for the definitions.

--config-file: one for all checkpoints, or one per checkpoint; without it, each checkpoint's folder
must hold the config.yaml that train_net.py wrote there. key=value overrides apply to every config.
Prints a Markdown table; --json writes all numbers.
"""
import argparse
import json
import os


def parse_checkpoints(specs):
    """``["name=path", "path"]`` -> ``[(name, path)]``; a bare path is named after its folder
    (or file, when two share a folder name)."""
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = None, spec
        out.append((name, path))
    folder_names = [os.path.basename(os.path.dirname(os.path.abspath(p))) for _, p in out]
    named = []
    for (name, path), folder in zip(out, folder_names):
        if name is None:
            name = folder if folder_names.count(folder) == 1 else os.path.splitext(os.path.basename(path))[0]
        named.append((name, path))
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"checkpoint names {names} are not unique; use --checkpoint NAME=PATH")
    return named


def config_files_for(checkpoints, config_files):
    """One config per checkpoint: the single --config-file, one each, or <checkpoint dir>/config.yaml."""
    if not config_files:
        files = [os.path.join(os.path.dirname(os.path.abspath(p)), "config.yaml") for _, p in checkpoints]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"no --config-file given and {missing} not found")
        return files
    if len(config_files) == 1:
        return config_files * len(checkpoints)
    if len(config_files) != len(checkpoints):
        raise ValueError(f"{len(config_files)} --config-file for {len(checkpoints)} --checkpoint; give one or one each")
    return list(config_files)


def format_table(results) -> str:
    """Markdown table of :func:`detkit.evaluation.confidence_iou.analyze_checkpoint` results by name."""
    from tabulate import tabulate

    rows = []
    for name, r in results.items():
        b, a = r["before_nms"], r["after_nms"]
        rows.append([
            name, b["mean_confidence"], b["mean_iou"], a["mean_confidence"], a["mean_iou"], b["pearson"],
            b["pearson_all"], f"{b['top']}/{b['predictions']}", f"{a['top']}/{a['predictions']}",
        ])
    frac = 100 * next(iter(results.values()))["top_fraction"]
    headers = [
        "model", "before NMS: mean conf", "mean IoU", "after NMS: mean conf", "mean IoU",
        f"Pearson (top {frac:g} % before NMS)", "Pearson (all before NMS)", "top / all before", "top / all after",
    ]
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".3f")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", action="append", default=[], help="LazyConfig (.py or config.yaml)")
    parser.add_argument("--checkpoint", action="append", required=True, metavar="[NAME=]PTH")
    parser.add_argument("--dataset", default=None, help="registered dataset (default: the config's test set)")
    parser.add_argument("--num-images", type=int, default=None, help="first N images only")
    parser.add_argument("--top-fraction", type=float, default=0.02)
    parser.add_argument("--class-agnostic", action="store_true", help="match ground truth of any class")
    parser.add_argument("--json", default=None, help="write all numbers to this json file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)

    from detectron2.utils.logger import setup_logger

    from detkit.engine import ConfigError, load_checked_config
    from detkit.evaluation.confidence_iou import analyze_checkpoint, empty_result_notes

    setup_logger(name="detkit")
    try:
        checkpoints = parse_checkpoints(args.checkpoint)
        configs = config_files_for(checkpoints, args.config_file)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    results = {}
    for (name, path), config_file in zip(checkpoints, configs):
        try:
            cfg = load_checked_config(config_file, args.opts, train=False, check_data=args.dataset is None)
        except ConfigError as e:
            parser.exit(2, f"analyze_confidence_iou.py: error: {e}\n")
        r = analyze_checkpoint(
            cfg, path, dataset=args.dataset, num_images=args.num_images,
            top_fraction=args.top_fraction, class_aware=not args.class_agnostic,
        )
        r["config_file"] = config_file
        results[name] = r
        print(f"{name}: {r['images']} images of {r['dataset']}", flush=True)
    print(format_table(results))
    for name, r in results.items():
        for note in empty_result_notes(r):
            print(f"Note: {name}: {note}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
