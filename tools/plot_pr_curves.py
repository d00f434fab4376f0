#!/usr/bin/env python
"""Precision-recall curves of evaluated Detectron2 runs, side by side (NoisyAnchors Fig. 2).

    python tools/plot_pr_curves.py OUTPUT_DIR [OUTPUT_DIR ...] --out pr.png [--names baseline,clean]

Each OUTPUT_DIR is a `train_net.py` run folder evaluated by COCOEvaluator: its test set is read from
OUTPUT_DIR/config.yaml (dataloader.test.dataset.names), its detections from
OUTPUT_DIR/inference/coco_instances_results.json. COCOeval's precision array gives one PNG with a
3x3 grid of panels: IoU 0.5 / 0.75 / 0.5:0.95 (all sizes, maxDet 100); small / medium / large
objects (IoU 0.5:0.95, maxDet 100); maxDet 1 / 10 / 100 (IoU 0.5:0.95, all sizes); every run on each
panel. Prints the AP (%, the mean precision of each curve) per panel and run.
"""
import argparse


def panel_ap_table(runs) -> str:
    """Markdown table: one row per run, one column per distinct panel, AP in %."""
    from tabulate import tabulate

    from detkit.evaluation.pr_curves import panel_aps

    panels, aps = panel_aps(runs)
    headers = ["run"] + [f"IoU {i}, {a}, maxDet {m}" for i, a, m in panels]
    return tabulate([[name, *v] for name, v in aps.items()], headers=headers, tablefmt="pipe", floatfmt=".2f")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dirs", nargs="+", metavar="OUTPUT_DIR", help="evaluated train_net.py run folders")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--names", default=None, help="comma-separated legend names, one per OUTPUT_DIR")
    args = parser.parse_args(argv)

    from detkit.evaluation.pr_curves import load_runs, plot_pr_curves

    names = args.names.split(",") if args.names else None
    try:
        runs, datasets = load_runs(args.output_dirs, names)
    except (ValueError, FileNotFoundError, KeyError) as e:
        parser.error(str(e))
    out = plot_pr_curves(runs, args.out, title=f"dataset: {', '.join(sorted(set(datasets)))}")
    print(panel_ap_table(runs))
    print(f"wrote {out}")
    return runs


if __name__ == "__main__":
    main()
