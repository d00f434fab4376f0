#!/usr/bin/env python
"""Multi-seed study: is a method's difference to the baseline more than seed noise?

    python tools/study.py --baseline configs/TreeCrowns/retinanet_mnv2_fpn.py \
        --config configs/TreeCrowns/clean_anchors_retinanet_mnv2_fpn.py \
        --config configs/TreeCrowns/swn_retinanet_mnv2_fpn.py \
        --seeds 0 1 2 3 --output-dir output/study/treecrowns [--jobs 2 --threads 1] [key=value ...]

Each (config, seed) trains as `train_net.py --resume train.output_dir=OUTPUT/<config>/seed<S>
train.seed=S key=value...` (its own metrics.json, eval_results.json, provenance.json, checkpoints
and study_run.log), J runs at once with T intra-op threads each (default: one run per GPU; on a CPU
2 jobs x 1 thread, measured fastest on 2 cores, docs/study_parallelism.md). Re-running the command
skips finished runs and resumes interrupted ones. Then OUTPUT/study.md, study.json and study.png:
per config mean ± std [min, max] over seeds; per compared config the seed-paired differences to the
baseline, their mean, 95 % Student-t and bootstrap intervals and a verdict (better / worse / within
noise), also into --report-dir when given. Runs that differ in more than the method and seed (data, schedule, batch, lr, backbone,
meta-architecture) are refused as a pairing. --report-only rewrites the report from the runs there.
"""
import argparse
import sys

from detkit.study import DEFAULT_METRICS, StudyError, run_and_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the baseline config (paired with every other)")
    parser.add_argument("--config", dest="configs", action="append", default=[], help="a compared config (repeat)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: GPUs, or 2 on a CPU)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads per run (default 1)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        help="box metrics to report (those every run has; default: %(default)s)")
    parser.add_argument("--title", default="Study")
    parser.add_argument("--report-dir", default=None,
                        help="also write study.md/json/png here (e.g. docs/results/NAME; no checkpoints)")
    parser.add_argument("--report-only", action="store_true", help="do not train: report the finished runs")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value overrides for every run")
    args = parser.parse_args(argv)
    try:
        out = run_and_report(args.baseline, args.configs, args.seeds, args.output_dir, args.opts, args.jobs,
                             args.threads, args.metrics, args.title, args.report_only,
                             report_dir=args.report_dir)
    except StudyError as e:
        print(f"study: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(open(out["paths"]["md"]).read())
    print("written: " + ", ".join(out["paths"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
