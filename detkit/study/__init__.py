"""Multi-seed studies: train a baseline and compared configs over several seeds (each an ordinary
train_net.py run), then report per-config spread and seed-paired differences with intervals.

    from detkit.study import run_and_report
    run_and_report(baseline, [config, ...], seeds=[0, 1, 2, 3], output_dir="output/study")

``tools/study.py`` is the command line. Modules: :mod:`.runner` (the runs, in parallel, resumable),
:mod:`.stats` (pure statistics), :mod:`.report` (study.json / study.md / study.png).
"""
import json
import os
import platform
import shlex
import sys
import time
from typing import Dict, Optional, Sequence

from ..engine.provenance import git_state
from .report import DEFAULT_METRICS, check_pairing, load_study_runs, study_results, write_study
from .runner import Progress, RunSpec, StudyError, plan_runs, run_study
from .stats import bootstrap_interval, compare, paired_differences, summary, t_interval, t_quantile, verdict

# Measured on the 2-core CPU machine (docs/study_parallelism.md): two single-threaded runs at once
# train a study faster than one run with two threads.
CPU_JOBS, CPU_THREADS = 2, 1

__all__ = [
    "CPU_JOBS",
    "CPU_THREADS",
    "DEFAULT_METRICS",
    "Progress",
    "RunSpec",
    "StudyError",
    "bootstrap_interval",
    "check_pairing",
    "compare",
    "default_parallelism",
    "load_study_runs",
    "paired_differences",
    "plan_runs",
    "report_study",
    "run_and_report",
    "run_study",
    "study_results",
    "summary",
    "t_interval",
    "t_quantile",
    "verdict",
    "write_study",
]


def default_parallelism(jobs: Optional[int] = None, threads: Optional[int] = None):
    """(jobs, threads, gpus): one run per GPU when there are GPUs, else the measured CPU split."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        return jobs or gpus, threads or CPU_THREADS, gpus
    return jobs or CPU_JOBS, threads or CPU_THREADS, 0


def report_study(specs: Sequence[RunSpec], baseline: str, out_dir: str, metrics: Sequence[str] = DEFAULT_METRICS,
                 title: str = "Study", meta: Optional[Dict] = None, extra_notes: Sequence[str] = ()) -> Dict[str, str]:
    """Check the pairing of the finished runs and write study.json / .md / .png into ``out_dir``."""
    runs = load_study_runs(specs)
    notes = check_pairing(runs, baseline) + list(extra_notes)
    missing = [s.label for s in specs if s.seed not in runs.get(s.name, {})]
    if missing:
        notes.append("not finished, left out: " + ", ".join(missing))
    results = study_results(runs, baseline, metrics, notes=notes, meta=meta)
    return write_study(results, out_dir, title)


def run_and_report(baseline: str, configs: Sequence[str], seeds: Sequence[int], output_dir: str,
                   opts: Sequence[str] = (), jobs: Optional[int] = None, threads: Optional[int] = None,
                   metrics: Sequence[str] = DEFAULT_METRICS, title: str = "Study", report_only: bool = False,
                   progress: Optional[Progress] = None, report_dir: Optional[str] = None) -> Dict:
    """Run (unless ``report_only``) and report a study into ``output_dir`` (and ``report_dir``, e.g.
    a docs folder: the report files only); returns ``{"paths", "outcome"}``. With ``report_only`` the
    command, parallelism and wall time of the study's own run (its study.json) are kept. Raises
    StudyError when a run failed (after writing the report of the others)."""
    jobs, threads, gpus = default_parallelism(jobs, threads)
    specs = plan_runs([baseline, *configs], seeds, output_dir)
    start = time.monotonic()
    outcome = {"finished": [], "failed": [], "skipped": specs}
    if not report_only:
        outcome = run_study(specs, opts, output_dir, jobs=jobs, threads=threads, gpus=gpus, progress=progress)
    meta = {
        "command": shlex.join([os.path.relpath(sys.argv[0]) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]),
        "commit": (git_state().get("commit") or "?")[:10],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores" + (f", {gpus} GPU(s)" if gpus else ""),
        "jobs": jobs,
        "threads": threads,
        "wall_minutes": None if report_only else round((time.monotonic() - start) / 60, 1),
        "seeds": list(seeds),
        "overrides": list(opts),
    }
    previous = os.path.join(output_dir, "study.json")
    if report_only and os.path.isfile(previous):
        with open(previous) as f:
            saved = json.load(f)
        meta["report_command"] = meta["command"]
        meta.update({k: saved[k] for k in ("command", "commit", "machine", "jobs", "threads", "wall_minutes")
                     if k in saved})
    name = os.path.splitext(os.path.basename(baseline))[0]
    paths = report_study(specs, name, output_dir, metrics, title, meta)
    if report_dir and os.path.abspath(report_dir) != os.path.abspath(output_dir):
        paths = report_study(specs, name, report_dir, metrics, title, meta)
    if outcome["failed"]:
        raise StudyError(f"{len(outcome['failed'])} run(s) failed: " + ", ".join(s.label for s in outcome["failed"])
                         + f" (the report of the others: {paths['md']}); re-run the command to retry them.")
    return {"paths": paths, "outcome": outcome}
