"""Running a multi-seed study: every (config, seed) is an ordinary ``train_net.py --resume`` run in
its own folder ``OUTPUT/<config name>/seed<S>``, J of them at once with T intra-op threads each.

* Resumable: a run whose ``eval_results.json`` reports ``iterations_trained == train.max_iter`` (of
  its own config.yaml) is finished and skipped; any other folder continues with ``--resume``
  (train_net.py's exact resume: RNG states, data stream). Re-running the study's command after a
  kill completes it without touching a finished number.
* The study's fixed settings (overrides, threads) are kept in ``OUTPUT/study_plan.json``; a re-run
  with other overrides or threads is refused (it would pair runs made differently). Adding configs
  or seeds to a study is fine.
* On GPUs (``torch.cuda.device_count() > 0``) each job gets one GPU (``CUDA_VISIBLE_DEVICES``).
* A failed run is reported with its log's last lines; the other runs go on.
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, TextIO

from ..runs import read_eval_results

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join(REPO_ROOT, "train_net.py")
PLAN_FILE = "study_plan.json"
RUN_LOG = "study_run.log"


class StudyError(Exception):
    """A study that cannot be run or reported as asked; the message says what and what to do."""


@dataclass
class RunSpec:
    """One (config, seed) of a study."""

    name: str  # the config's file name without .py
    config: str
    seed: int
    output_dir: str

    @property
    def label(self) -> str:
        return f"{self.name} seed {self.seed}"


def config_name(config: str) -> str:
    return os.path.splitext(os.path.basename(config))[0]


def plan_runs(configs: Sequence[str], seeds: Sequence[int], output_dir: str) -> List[RunSpec]:
    """The runs of a study, seed-major (all configs of seed 0, then seed 1, ...) so that a study cut
    short has complete pairs. Errors for a missing config, two configs of the same name, a repeated
    seed."""
    names = {}
    for config in configs:
        if not os.path.isfile(config):
            raise StudyError(f"Config file {config!r} does not exist.")
        name = config_name(config)
        if name in names and os.path.abspath(names[name]) != os.path.abspath(config):
            raise StudyError(f"Two configs share the name {name!r} ({names[name]}, {config}): each config's runs "
                             "live in OUTPUT/<config name>; copy one under another name.")
        names[name] = config
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"Seeds {list(seeds)} repeat a seed.")
    if not seeds:
        raise StudyError("A study needs at least one seed (--seeds 0 1 2 3).")
    unique = list(dict.fromkeys(configs))
    return [
        RunSpec(config_name(c), c, int(s), os.path.join(os.path.abspath(output_dir), config_name(c), f"seed{s}"))
        for s in seeds for c in unique
    ]


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def configured_max_iter(output_dir: str) -> Optional[int]:
    """``train.max_iter`` of the config.yaml train_net.py saved in ``output_dir`` (None if none)."""
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    import yaml

    class Loader(yaml.SafeLoader):  # Detectron2 dumps some objects with python/ tags: read them as None
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    try:
        with open(path) as f:
            cfg = yaml.load(f, Loader=Loader)
        return int(cfg["train"]["max_iter"])
    except Exception:
        return None


def run_state(spec: RunSpec) -> str:
    """"finished" (evaluated after its last iteration), "partial" (a folder without that) or "new"."""
    if not os.path.isdir(spec.output_dir):
        return "new"
    saved = read_eval_results(spec.output_dir)
    max_iter = configured_max_iter(spec.output_dir)
    if isinstance(saved, dict) and max_iter is not None and saved.get("iterations_trained") == max_iter:
        return "finished"
    return "partial"


def last_iteration(output_dir: str) -> Optional[int]:
    """The last "iteration" in metrics.json (0-based, so iterations done = value + 1)."""
    path = os.path.join(output_dir, "metrics.json")
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return int(json.loads(line)["iteration"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def train_command(spec: RunSpec, opts: Sequence[str]) -> List[str]:
    return [sys.executable, TRAIN_NET, "--config-file", spec.config, "--resume",
            f"train.output_dir={spec.output_dir}", f"train.seed={spec.seed}", *opts]


def check_plan(output_dir: str, opts: Sequence[str], threads: int) -> None:
    """Write OUTPUT/study_plan.json on the first run; refuse a re-run with other settings."""
    path = os.path.join(output_dir, PLAN_FILE)
    plan = {"overrides": list(opts), "threads": int(threads)}
    saved = read_json(path)
    if saved is None:
        os.makedirs(output_dir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(plan, f, indent=2)
        return
    for key in plan:
        if saved.get(key) != plan[key]:
            raise StudyError(
                f"{path}: this study was started with {key}={saved.get(key)!r}, now {plan[key]!r}. Runs made "
                "differently would be paired: give another --output-dir, or repeat the original settings."
            )


@dataclass
class Job:
    spec: RunSpec
    process: subprocess.Popen
    log: TextIO
    slot: int
    max_iter: Optional[int]
    started: float = field(default_factory=time.monotonic)
    first_seen: Optional[tuple] = None  # (time, iteration) of the first progress reading
    iteration: Optional[int] = None

    def update(self) -> None:
        it = last_iteration(self.spec.output_dir)
        if it is None:
            return
        if self.max_iter is None:
            self.max_iter = configured_max_iter(self.spec.output_dir)
        if self.first_seen is None or it < self.first_seen[1]:
            self.first_seen = (time.monotonic(), it)
        self.iteration = it

    def rate(self) -> Optional[float]:
        """Iterations per second since the first progress reading of this start."""
        if self.first_seen is None or self.iteration is None or self.iteration <= self.first_seen[1]:
            return None
        return (self.iteration - self.first_seen[1]) / max(1e-6, time.monotonic() - self.first_seen[0])

    def eta(self) -> Optional[float]:
        rate = self.rate()
        if rate is None or self.max_iter is None:
            return None
        return max(0.0, (self.max_iter - 1 - self.iteration) / rate)


def format_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """One line per running job and one for the study; redrawn in place on a terminal, printed every
    ``every`` seconds (and at each start / end) otherwise."""

    def __init__(self, stream: Optional[TextIO] = None, every: float = 60.0):
        self.stream, self.every = stream or sys.stderr, every  # sys.stderr now, not at import
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.drawn = 0
        self.last = 0.0

    def message(self, text: str) -> None:
        self._clear()
        print(text, file=self.stream, flush=True)
        self.last = 0.0

    def _clear(self):
        if self.live and self.drawn:
            self.stream.write("\x1b[F\x1b[K" * self.drawn)
            self.drawn = 0

    def draw(self, lines: List[str], force: bool = False) -> None:
        now = time.monotonic()
        if not self.live and not force and now - self.last < self.every:
            return
        self.last = now
        self._clear()
        for line in lines:
            print(line, file=self.stream)
        self.stream.flush()
        if self.live:
            self.drawn = len(lines)


def progress_lines(jobs: Sequence[Job], pending: int, done: int, total: int, default_iters: Optional[int],
                   slots: int) -> List[str]:
    lines = []
    rates = [j.rate() for j in jobs if j.rate()]
    for j in jobs:
        it = "-" if j.iteration is None else j.iteration + 1
        lines.append(f"  [{j.slot}] {j.spec.name} seed {j.spec.seed}: iteration {it}/{j.max_iter or '?'}, "
                     f"ETA {format_seconds(j.eta())}")
    overall = None
    if rates:
        per_job = sum(rates) / len(rates)
        remaining = sum((j.max_iter or default_iters or 0) - (j.iteration or 0) for j in jobs)
        remaining += pending * (default_iters or max((j.max_iter or 0) for j in jobs))
        overall = remaining / (per_job * min(slots, max(1, len(jobs) + pending)))
    lines.append(f"study: {done}/{total} runs done, {len(jobs)} running, {pending} waiting, ETA {format_seconds(overall)}")
    return lines


def log_tail(path: str, n: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    | " + line for line in lines[-n:])


def run_study(specs: Sequence[RunSpec], opts: Sequence[str], output_dir: str, jobs: int = 2, threads: int = 1,
              gpus: int = 0, progress: Optional[Progress] = None, poll: float = 2.0) -> Dict[str, List[RunSpec]]:
    """Train every run of ``specs`` that is not finished, ``jobs`` at a time with ``threads`` intra-op
    threads each (``gpus`` > 0: one GPU per job, at most ``gpus`` jobs). Returns ``{"finished",
    "failed", "skipped"}`` lists of specs (skipped = finished before this call)."""
    if jobs < 1 or threads < 1:
        raise StudyError(f"--jobs {jobs} --threads {threads}: both must be at least 1.")
    if gpus:
        jobs = min(jobs, gpus)
    check_plan(output_dir, opts, threads)
    progress = progress or Progress()
    outcome = {"finished": [], "failed": [], "skipped": []}
    queue = []
    for spec in specs:
        if run_state(spec) == "finished":
            outcome["skipped"].append(spec)
        else:
            queue.append(spec)
    for spec in queue:  # before starting anything: two processes must never train into one folder
        pid = running_elsewhere(spec.output_dir)
        if pid is not None:
            raise StudyError(f"{spec.label}: train_net.py (pid {pid}) still trains in {spec.output_dir}, started by "
                             "an earlier study that was stopped without its runs. Wait for it or stop it "
                             f"(kill {pid}), then re-run this command.")
    if outcome["skipped"]:
        progress.message(f"{len(outcome['skipped'])} run(s) already finished: "
                         + ", ".join(s.label for s in outcome["skipped"]))
    total, running = len(specs), []
    free = list(range(jobs))
    default_iters = None

    def stop(signum, frame):  # a kill of the study stops its runs (they resume on the next call)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop) if _main_thread() else None
    try:
        while queue or running:
            while queue and free:
                spec = queue.pop(0)
                slot = free.pop(0)
                running.append(_start(spec, opts, slot, threads, gpus, progress))
            time.sleep(poll)
            for job in list(running):
                job.update()
                if job.max_iter and default_iters is None:
                    default_iters = job.max_iter
                code = job.process.poll()
                if code is None:
                    continue
                job.log.close()
                running.remove(job)
                free.append(job.slot)
                free.sort()
                minutes = (time.monotonic() - job.started) / 60
                if code == 0 and run_state(job.spec) == "finished":
                    outcome["finished"].append(job.spec)
                    progress.message(f"finished {job.spec.label} in {minutes:.1f} min")
                else:
                    outcome["failed"].append(job.spec)
                    log = os.path.join(job.spec.output_dir, RUN_LOG)
                    progress.message(f"FAILED {job.spec.label} (exit code {code}) after {minutes:.1f} min; "
                                     f"last lines of {log}:\n{log_tail(log)}")
            done = len(outcome["finished"]) + len(outcome["skipped"]) + len(outcome["failed"])
            progress.draw(progress_lines(running, len(queue), done, total, default_iters, jobs))
    except KeyboardInterrupt:
        for job in running:
            _terminate(job.process)
            job.log.close()
        progress.message("study interrupted: re-run the same command to continue where it stopped")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return outcome


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


PID_FILE = "study_run.pid"


def running_elsewhere(output_dir: str) -> Optional[int]:
    """The pid of a train_net.py that an earlier study started in ``output_dir`` and that still runs
    (a study killed alone, without its runs), else None."""
    try:
        with open(os.path.join(output_dir, PID_FILE)) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    return pid if "train_net.py" in cmdline and output_dir in cmdline else None


def _start(spec: RunSpec, opts, slot: int, threads: int, gpus: int, progress: Progress) -> Job:
    os.makedirs(spec.output_dir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(slot)
    cmd = train_command(spec, opts)
    log = open(os.path.join(spec.output_dir, RUN_LOG), "a")
    log.write(f"\n+ {shlex.join(cmd)}\n")
    log.flush()
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    with open(os.path.join(spec.output_dir, PID_FILE), "w") as f:
        f.write(str(process.pid))
    state = "continues" if last_iteration(spec.output_dir) is not None else "starts"
    progress.message(f"[{slot}] {spec.label} {state} ({threads} thread{'s' if threads > 1 else ''}"
                     f"{f', GPU {slot}' if gpus else ''}): {spec.output_dir}")
    job = Job(spec, process, log, slot, configured_max_iter(spec.output_dir))
    return job


def _terminate(process: subprocess.Popen, grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
