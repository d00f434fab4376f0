#!/usr/bin/env python
"""Does a config's training depend on the number of processes? Train two iterations of the same
batches of 4 images as 1 process x 4 images and as 2 processes x 2 images (DDP, GLOO on a CPU), with
the random augmentations off, and print every loss term of iterations 0 and 1 side by side with
the relative difference. Detectron2 averages the logged losses over processes, which is what DDP
optimises. Iteration 0 shows the objective; iteration 1, after one update, also shows differences
in the gradients that leave the loss value unchanged (e.g. a per-process rescale of a loss sum).

    python tools/compare_process_counts.py --config-file configs/TreeCrowns/clean_anchors_retinanet_mnv2_fpn.py \\
        [--out output/process_counts/x.json] [key=value ...]

Typical overrides: `train.init_checkpoint=RUN/model_final.pth` (a trained model: the SWN's and
CleanAnchors' batch statistics matter most there), `model.global_loss_normalizer=False`
(Detectron2's per-process positive count). Each setup is an ordinary `train_net.py` run in a
temporary folder (`train.max_iter=2`, followed by the config's evaluation).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXED = [
    "train.max_iter=2",
    "train.log_period=1",
    "train.checkpointer.period=1000",
    "dataloader.train.total_batch_size=4",
    "dataloader.train.mapper.augmentations=[]",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
]


def iteration_losses(config: str, num_processes: int, opts, workdir: str) -> dict:
    """``{"<term>@<iteration>": value}``: the ``loss_*`` / ``total_loss`` entries of iterations 0
    and 1 in the run's metrics.json."""
    out = os.path.join(workdir, f"{num_processes}proc")
    cmd = [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--config-file", config,
           "--num-gpus", str(num_processes), f"train.output_dir={out}", *FIXED, *opts]
    if num_processes > 1:
        cmd[4:4] = ["--dist-url", "auto"]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    r = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"compare_process_counts: {' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    return {
        f"{k}@{row['iteration']}": v
        for row in rows
        if "total_loss" in row and row.get("iteration") in (0, 1)
        for k, v in row.items()
        if k.startswith("loss_") or k == "total_loss"
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--out", help="write the comparison as JSON here")
    parser.add_argument("opts", nargs="*", help="key=value overrides for both setups")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="process-counts-") as workdir:
        one = iteration_losses(args.config_file, 1, args.opts, workdir)
        two = iteration_losses(args.config_file, 2, args.opts, workdir)
    rows = {k: {"1x4": one[k], "2x2": two[k], "rel_diff": (two[k] - one[k]) / abs(one[k]) if one[k] else None}
            for k in one}
    print(f"{args.config_file} {' '.join(args.opts)}")
    print(f"{'term@iteration':<18}{'1 proc x 4 img':>16}{'2 proc x 2 img':>16}{'rel. diff':>12}")
    for k, r in rows.items():
        rel = "-" if r["rel_diff"] is None else f"{100 * r['rel_diff']:+.3f} %"
        print(f"{k:<18}{r['1x4']:>16.6f}{r['2x2']:>16.6f}{rel:>12}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"config": args.config_file, "opts": args.opts, "losses": rows}, f, indent=1)


if __name__ == "__main__":
    main()
