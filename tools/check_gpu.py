#!/usr/bin/env python
"""Check the GPU path in one command (any machine with a CUDA GPU):

    python tools/check_gpu.py [--out docs/gpu_check.md] [--iters 20]

1. `pytest -m cuda tests`: AMP training iterations of each method model (float16 autocast and
   GradScaler, as train_net.py's AMPTrainer), the methods' pure functions in float16 / bfloat16 on
   CUDA against float32, TTA and Soft-NMS on CUDA (tests/test_mixed_precision.py);
2. `tools/benchmark.py --device cuda`: the methods' training and inference cost against stock
   Detectron2 on the GPU, and the R-50-FPN AMP throughput at 800x1333 (its `cuda` section).

Writes a short Markdown report (GPU, versions, the test summary, the benchmark tables) to --out and
exits non-zero when a test failed. Without a GPU it says so and exits 2.
"""
import argparse
import datetime
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/gpu_check.md")
    parser.add_argument("--iters", type=int, default=20, help="benchmark iterations per model")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("check_gpu: no CUDA device is visible; nothing to check.", file=sys.stderr)
        return 2
    gpu = f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
                           cwd=REPO_ROOT, capture_output=True, text=True)
    summary = (tests.stdout.strip().splitlines() or ["(no output)"])[-1]
    bench = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "benchmark.py"), "--device", "cuda",
                            "--iters", str(args.iters)], cwd=REPO_ROOT, capture_output=True, text=True)
    lines = [
        "# GPU check (`tools/check_gpu.py`)", "",
        f"- GPU: {gpu}",
        f"- date (UTC): {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `{' '.join([os.path.relpath(sys.argv[0])] + (argv or sys.argv[1:]))}`", "",
        "## `pytest -m cuda tests`", "", f"`{summary}` (exit code {tests.returncode})", "",
    ]
    if tests.returncode != 0:
        lines += ["```", tests.stdout[-6000:], "```", ""]
    lines += ["## `tools/benchmark.py --device cuda`", "", f"exit code {bench.returncode}", "", bench.stdout.strip(), ""]
    if bench.returncode != 0:
        lines += ["```", bench.stderr[-4000:], "```", ""]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    print(f"written: {args.out}")
    return 0 if tests.returncode == 0 and bench.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
