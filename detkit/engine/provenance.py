"""Provenance of a run: what was run, from which code, on what.

``train_net.py`` calls :func:`write_provenance` once per start (main process only), after
``default_setup`` has saved ``config.yaml``. ``tools/report.py`` reads the file back.

Files written into ``train.output_dir``:

* ``provenance.json`` for a training run. A ``--resume`` of a folder that already has one keeps
  the original record (how the run was started) and appends the new start to its ``"resumes"``
  list, so the commit and the command of every part of the run are known;
* ``provenance_eval.json`` for ``--eval-only`` (overwritten by each evaluation), so that evaluating
  a checkpoint into its training folder never replaces the training run's record.
"""
import datetime
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
from typing import Dict, List, Optional

import torch

from ..utils import file_sha256, write_json

PROVENANCE_FILE = "provenance.json"
EVAL_PROVENANCE_FILE = "provenance_eval.json"

# The checkout whose commit is recorded: the one this package lives in.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _git(args: List[str], cwd: str) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, timeout
        return None
    return out.stdout


def git_state(repo_dir: str = _REPO_ROOT) -> Dict:
    """``{"commit", "dirty", "changed_files"}`` of the checkout at ``repo_dir``; all ``None`` when
    git is missing or ``repo_dir`` is not in a git repository. ``dirty`` counts modified tracked
    files and untracked files that are not ignored; ``changed_files`` lists at most 50 of them."""
    commit = _git(["rev-parse", "HEAD"], repo_dir)
    if commit is None:
        return {"commit": None, "dirty": None, "changed_files": None}
    status = _git(["status", "--porcelain"], repo_dir)
    changed = None if status is None else [line[3:] for line in status.splitlines() if line.strip()]
    return {
        "commit": commit.strip(),
        "dirty": None if changed is None else bool(changed),
        "changed_files": None if changed is None else changed[:50],
    }


def library_versions() -> Dict[str, Optional[str]]:
    """Versions of Python and the libraries a result depends on (``None`` when not importable)."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchvision", "detectron2", "numpy", "pycocotools"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", None)
        except ImportError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    versions["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return versions


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str) -> Dict:
    """What ``device`` ("cpu", "cuda", "cuda:1") is: GPU name and count, or the CPU model and the
    number of threads torch uses."""
    info = {"device": device, "cpu": _cpu_model(), "num_threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        info["name"] = torch.cuda.get_device_name(index)
        info["num_visible_gpus"] = torch.cuda.device_count()
    else:
        info["name"] = "cpu"
    return info


def collect_provenance(cfg, args, device: Optional[str] = None, world_size: int = 1) -> Dict:
    """The provenance record of one start of ``train_net.py`` (a JSON-serialisable dict).

    Args:
        cfg: the LazyConfig after overrides (``train.seed``, ``train.output_dir`` are read).
        args: ``train_net``'s parsed arguments (``config_file``, ``opts``, ``resume``,
            ``eval_only``, ``num_gpus``, ``num_machines``).
        device: the device the run uses (``cfg.train.device`` when not given).
        world_size: number of processes of the run.
    """
    train = cfg.get("train", {}) or {}
    device = device or train.get("device", "cpu")
    config_file = args.config_file
    config_yaml = os.path.join(train.get("output_dir", "") or "", "config.yaml")
    seed = train.get("seed", None)
    return {
        "config_file": config_file,
        "config_file_abspath": os.path.abspath(config_file) if config_file else None,
        "config_sha256": file_sha256(config_file) if config_file and os.path.isfile(config_file) else None,
        # the resolved config default_setup saved (what the run really used, overrides included)
        "config_yaml_sha256": file_sha256(config_yaml) if os.path.isfile(config_yaml) else None,
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "overrides": list(getattr(args, "opts", []) or []),
        "mode": "eval-only" if getattr(args, "eval_only", False) else "train",
        "resume": bool(getattr(args, "resume", False)),
        "init_checkpoint": train.get("init_checkpoint", None) or None,
        "git": git_state(),
        # default_setup seeds process r with seed + r; a negative seed means a random one
        "seed": None if seed is None else int(seed),
        "versions": library_versions(),
        "device": device_info(device),
        "world_size": int(world_size),
        "num_machines": int(getattr(args, "num_machines", 1) or 1),
        "hostname": socket.gethostname(),
        "start_time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_provenance(cfg, args, output_dir: str, device: Optional[str] = None) -> Optional[str]:
    """Write the provenance of this start into ``output_dir`` (see the module docstring for which
    file) and return its path; does nothing and returns ``None`` outside the main process."""
    from detectron2.utils import comm

    if not comm.is_main_process() or not output_dir:
        return None
    record = collect_provenance(cfg, args, device=device, world_size=comm.get_world_size())
    os.makedirs(output_dir, exist_ok=True)
    if record["mode"] == "eval-only":
        path = os.path.join(output_dir, EVAL_PROVENANCE_FILE)
    else:
        path = os.path.join(output_dir, PROVENANCE_FILE)
        if record["resume"] and os.path.isfile(path):
            try:
                with open(path) as f:
                    first = json.load(f)
            except ValueError:  # a truncated file: this start's record replaces it
                first = None
            if isinstance(first, dict):
                first.setdefault("resumes", []).append(record)
                record = first
    write_json(record, path, indent=2)
    return path
