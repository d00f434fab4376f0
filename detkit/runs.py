"""Reading train_net.py output folders: what a run wrote (metrics.json, eval_results.json,
config.yaml, provenance.json, log.txt) as one dict, and which runs may be compared as differing only in
the method (the same data, schedule, batch, lr, backbone and Detectron2 meta-architecture).

Used by tools/report.py (model-zoo style reports) and detkit.study (multi-seed studies).
"""
import json
import os
import re
import statistics
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

# Detectron2's "1x": 90k iterations of 16 images (MODEL_ZOO.md)
ONE_X_IMAGES = 90000 * 16
TIME_SKIP_ITERS = 20
KNOWN_TASKS = ("bbox", "segm", "keypoints", "box_proposals")
# config keys that differ between any two runs without changing what is trained
IGNORED_CONFIG_KEYS = ("train.output_dir", "dataloader.evaluator.output_dir", "train.device")


class ReportError(Exception):
    """A run folder or one of its files cannot be used; the message names the file."""


# ---------------------------------------------------------------------------------------------
# reading one run


def read_metrics(path: str) -> Tuple[List[Dict], List[str]]:
    """The lines of a JSONWriter ``metrics.json`` as dicts sorted by "iteration", one per iteration
    (a ``--resume`` may write an iteration twice: later lines update earlier ones), and notes. A
    truncated last line (a run killed while writing) is dropped with a note; any other line that
    is not a JSON object is an error."""
    by_iter: Dict[int, Dict] = OrderedDict()
    notes = []
    with open(path) as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "iteration" not in record:
                raise ValueError("not an object with an 'iteration'")
        except ValueError as e:
            if number == len(lines):
                notes.append(f"{path}: last line is incomplete and was skipped")
                continue
            raise ReportError(f"{path}, line {number}: not a JSONWriter record ({e}): {line[:80]!r}")
        by_iter.setdefault(int(record["iteration"]), {}).update(record)
    return [by_iter[k] for k in sorted(by_iter)], notes


def median_iteration_time(metrics: Sequence[Dict], skip: int = TIME_SKIP_ITERS) -> Tuple[Optional[float], str]:
    """Median of the "time" values of the lines with iteration >= ``skip``, and how it was taken.
    Runs too short to have such lines use all their lines (said in the returned note)."""
    timed = [(m["iteration"], m["time"]) for m in metrics if _is_number(m.get("time"))]
    if not timed:
        return None, "no 'time' in metrics.json"
    later = [t for it, t in timed if it >= skip]
    if later:
        return statistics.median(later), f"median over iterations >= {skip}"
    return statistics.median(t for _, t in timed), f"run shorter than {skip + 1} iterations: median over all"


def peak_memory_gb(metrics: Sequence[Dict], key: str = "peak_mem_mb") -> Optional[float]:
    values = [m[key] for m in metrics if _is_number(m.get(key))]
    return max(values) / 1024.0 if values else None


_INFERENCE_LINE = re.compile(
    r"Total inference pure compute time: .*?\(([0-9.eE+-]+) s / iter per device, on (\d+) devices\)"
)


def inference_time_from_log(path: str) -> Optional[float]:
    """Seconds per image of the last evaluation logged in a Detectron2 ``log.txt``."""
    if not os.path.isfile(path):
        return None
    found = None
    with open(path, errors="replace") as f:
        for line in f:
            m = _INFERENCE_LINE.search(line)
            if m:
                found = float(m.group(1))
    return found


def normalize_results(results: Dict) -> "OrderedDict[str, Dict[str, Dict[str, float]]]":
    """``eval_results.json``'s "results" as ``{evaluation: {task: {metric: value}}}``.

    Accepts what ``inference_on_dataset`` returns for one dataset (``{task: metrics}``: evaluation
    "") and the per-dataset form (``{dataset: {task: metrics}}``). A task key with a suffix, such
    as "bbox_TTA", becomes task "bbox" of evaluation "TTA"."""
    if not isinstance(results, dict):
        raise ReportError(f"'results' is {type(results).__name__}, expected a dict")

    def is_task_level(d):
        return isinstance(d, dict) and all(
            isinstance(v, dict) and all(_is_number(x) or x is None for x in v.values()) for v in d.values()
        )

    out: "OrderedDict[str, Dict]" = OrderedDict()
    levels = [("", results)] if is_task_level(results) else list(results.items())
    for evaluation, tasks in levels:
        if not is_task_level(tasks):
            raise ReportError(f"results[{evaluation!r}] is not a {{task: {{metric: value}}}} dict")
        for task, metrics in tasks.items():
            name, suffix = task, ""
            for known in KNOWN_TASKS:
                if task.startswith(known + "_"):
                    name, suffix = known, task[len(known) + 1:]
            key = " ".join(x for x in (evaluation, suffix) if x)
            out.setdefault(key, {})[name] = metrics
    return out


def _cfg_get(cfg, dotted: str, default=None):
    node = cfg
    try:
        for part in dotted.split("."):
            node = node[part]
    except Exception:  # missing key, unresolvable interpolation, not a container
        return default
    return node


def _names(value) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def model_family(target: Optional[str]) -> str:
    """The Detectron2 class a model ``_target_`` is or derives from ("RetinaNet",
    "GeneralizedRCNN", ...); the target's last name when it is not a Detectron2 subclass or
    cannot be imported."""
    if not target:
        return "-"
    try:
        from detectron2.utils.registry import locate

        obj = locate(target)
        for cls in getattr(obj, "__mro__", ()):
            if cls.__module__.startswith("detectron2."):
                return cls.__name__
    except Exception:
        pass
    return target.rsplit(".", 1)[-1]


def lr_steps(cfg, max_iter: Optional[int]) -> Optional[Tuple]:
    """Iterations at which the lr multiplier drops (after warmup), from ``cfg.lr_multiplier``;
    ("continuous",) for a smooth decay (cosine, linear); None when it cannot be built."""
    if not max_iter or "lr_multiplier" not in cfg:
        return None
    try:
        from detectron2.config import instantiate

        sched = instantiate(cfg.lr_multiplier)
        multiplier = lambda i: float(sched(i / max_iter))  # noqa: E731  (what LRMultiplier calls)
        stride = max(1, max_iter // 5000)
        grid = list(range(0, max_iter, stride))
        values = [multiplier(i) for i in grid]
    except Exception:
        return None
    drops = []
    for j in range(1, len(grid)):
        if values[j] < values[j - 1] * (1 - 1e-6):
            if len(drops) > 10:
                break
            # the exact iteration inside the coarse interval
            prev = values[j - 1]
            for i in range(grid[j - 1] + 1, grid[j] + 1):
                value = multiplier(i)
                if value < prev * (1 - 1e-6):
                    drops.append(i)
                    break
                prev = value
    return ("continuous",) if len(drops) > 10 else tuple(drops)


def schedule_name(max_iter: Optional[int], batch: Optional[int]) -> str:
    """"1x", "3x", ... as in MODEL_ZOO.md when ``max_iter * batch`` is a multiple of 90k x 16
    images (in halves), else "<max_iter> it × <batch> img"."""
    if not max_iter or not batch:
        return "-"
    factor = max_iter * batch / ONE_X_IMAGES
    if factor > 0 and abs(factor * 2 - round(factor * 2)) < 1e-9 and round(factor * 2) >= 1:
        return f"{factor:g}x"
    return f"{max_iter} it × {batch} img"


def flatten_config(cfg) -> Dict[str, str]:
    """``{"a.b.c": repr of the value}`` of every leaf, interpolations unresolved."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=False)
    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
            for i, v in enumerate(node):
                walk(f"{prefix}.{i}", v)
        else:
            flat[prefix] = node if isinstance(node, str) else json.dumps(node, default=str)

    walk("", container)
    return flat


def read_config(path: str) -> Dict:
    """What the report needs from a run's saved ``config.yaml``."""
    from detectron2.config import LazyConfig

    try:
        cfg = LazyConfig.load(path)
    except Exception as e:
        raise ReportError(f"{path}: cannot be loaded as a LazyConfig ({type(e).__name__}: {e})") from e
    max_iter = _cfg_get(cfg, "train.max_iter")
    max_iter = int(max_iter) if _is_number(max_iter) else None
    batch = _cfg_get(cfg, "dataloader.train.total_batch_size")
    batch = int(batch) if _is_number(batch) else None
    flat = flatten_config(cfg)
    target = flat.get("model._target_")
    targets = [v for k, v in flat.items() if k.startswith("model.") and k.endswith("._target_")]
    backbone = tuple(flat.get(k) for k in ("model.backbone._target_", "model.backbone.bottom_up._target_") if k in flat)
    base_lr = _cfg_get(cfg, "optimizer.lr")
    return {
        "max_iter": max_iter,
        "batch_size": batch,
        "lr_sched": schedule_name(max_iter, batch),
        "base_lr": float(base_lr) if _is_number(base_lr) else None,
        "lr_steps": lr_steps(cfg, max_iter),
        "train_datasets": _names(_cfg_get(cfg, "dataloader.train.dataset.names")),
        "test_datasets": _names(_cfg_get(cfg, "dataloader.test.dataset.names")),
        "model_target": target,
        "model_family": model_family(target),
        "backbone": backbone,
        "stock_model": bool(targets) and all(t.startswith(("detectron2.", "detkit.")) for t in targets),
        "seed": _cfg_get(cfg, "train.seed"),
        "flat": flat,
    }


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from e


def read_eval_results(output_dir: str, strict: bool = False) -> Optional[Dict]:
    """The ``eval_results.json`` train_net.py wrote in ``output_dir`` (the one reader of that file):
    ``{"iterations_trained", "results": {evaluation: {task: {metric: value}}}, timings...}``, or
    None when there is none yet. An unreadable file or one without ``results`` is None too, unless
    ``strict`` (then :class:`ReportError` naming the file)."""
    path = os.path.join(output_dir, "eval_results.json")
    if not os.path.isfile(path):
        return None
    try:
        saved = _read_json(path)
    except (ReportError, OSError):
        if strict:
            raise
        return None
    if not isinstance(saved, dict) or "results" not in saved:
        if strict:
            raise ReportError(f"{path}: no 'results' key (expected train_net.py's format)")
        return None
    return saved


def load_run(output_dir: str, name: Optional[str] = None) -> Dict:
    """Everything the report shows about one train_net output folder.

    Returns a dict with "name", "dir", "config" (see :func:`read_config`; None without
    config.yaml), "metrics" (metrics.json lines), "s_per_iter" and "time_note", "train_mem_gb",
    "inference_s_per_image" (``{"": plain, "tta": with TTA}``, seconds per image: Detectron2's pure
    compute time, else the inference loop's wall time), "inference_kind" (``{"": "compute" or
    "wall", ...}``) and "inference_source", "iterations_trained", "results"
    (:func:`normalize_results`), "provenance" / "provenance_eval" (the JSON or None) and "notes".
    Missing files give None values and a note; a folder with none of the files is an error."""
    if not os.path.isdir(output_dir):
        raise ReportError(f"{output_dir}: no such folder (give train.output_dir folders of train_net.py runs)")
    files = {f: os.path.join(output_dir, f) for f in ("metrics.json", "eval_results.json", "config.yaml",
                                                        "provenance.json", "provenance_eval.json", "log.txt")}
    present = {f: os.path.isfile(p) for f, p in files.items()}
    if not (present["metrics.json"] or present["eval_results.json"] or present["config.yaml"]):
        raise ReportError(
            f"{output_dir}: not a train_net.py output folder (none of metrics.json, eval_results.json, config.yaml)"
        )
    run = {"name": name or os.path.basename(os.path.normpath(output_dir)), "dir": output_dir, "notes": []}

    run["config"] = read_config(files["config.yaml"]) if present["config.yaml"] else None
    if run["config"] is None:
        run["notes"].append("no config.yaml")

    if present["metrics.json"]:
        run["metrics"], notes = read_metrics(files["metrics.json"])
        run["notes"] += notes
    else:
        run["metrics"] = []
        run["notes"].append("no metrics.json")
    run["s_per_iter"], run["time_note"] = median_iteration_time(run["metrics"])
    run["train_mem_gb"] = peak_memory_gb(run["metrics"])
    if run["metrics"] and run["train_mem_gb"] is None:
        run["notes"].append("no peak_mem_mb in metrics.json (run predates detkit.engine.PeakMemory)")

    run["results"], run["iterations_trained"], saved = OrderedDict(), None, {}
    if present["eval_results.json"]:
        saved = read_eval_results(output_dir, strict=True)
        try:
            run["results"] = normalize_results(saved["results"])
        except ReportError as e:
            raise ReportError(f"{files['eval_results.json']}: {e}") from e
        run["iterations_trained"] = saved.get("iterations_trained")
    else:
        run["notes"].append("no eval_results.json")
    # Detectron2's pure compute time: "inference_compute_s_per_image" (plain evaluation), "..._tta"
    # (evaluation "TTA"); older runs: log.txt's "pure compute" line, else the loop's wall time
    # "inference_s_per_image" (data loading and worker start-up included)
    compute, wall = _timing(saved, "inference_compute_s_per_image"), _timing(saved, "inference_s_per_image")
    run["inference_s_per_image"], run["inference_kind"] = dict(compute), {k: "compute" for k in compute}
    run["inference_source"] = "eval_results.json (pure compute)" if "" in compute else None
    if "" not in compute:
        from_log = inference_time_from_log(files["log.txt"])
        if from_log is not None:
            run["inference_s_per_image"][""], run["inference_kind"][""] = from_log, "compute"
            run["inference_source"] = "log.txt (pure compute)"
    for key, value in wall.items():
        if key not in run["inference_s_per_image"]:
            run["inference_s_per_image"][key], run["inference_kind"][key] = value, "wall"
            if key == "":
                run["inference_source"] = "eval_results.json (wall time of the inference loop, data loading included)"

    run["provenance"] = _read_json(files["provenance.json"]) if present["provenance.json"] else None
    run["provenance_eval"] = _read_json(files["provenance_eval.json"]) if present["provenance_eval.json"] else None
    if run["provenance"] is None:
        run["notes"].append("no provenance.json")
    return run


def _timing(saved: Dict, prefix: str) -> Dict[str, float]:
    """``{"": value of prefix, "tta": value of prefix_tta, ...}`` of the numbers in eval_results.json."""
    return {k[len(prefix):].lstrip("_").lower(): v for k, v in saved.items()
            if re.fullmatch(re.escape(prefix) + r"(_\w+)?", k) and _is_number(v)}


def load_runs(output_dirs: Sequence[str]) -> List[Dict]:
    """:func:`load_run` of each folder, named by the folder's name, or by as many trailing path
    components as it takes to tell two folders of the same name apart."""
    parts = [os.path.normpath(os.path.abspath(d)).split(os.sep) for d in output_dirs]
    depth = 1
    while depth < max(len(p) for p in parts) and len({"/".join(p[-depth:]) for p in parts}) < len(parts):
        depth += 1
    return [load_run(d, "/".join(p[-depth:])) for d, p in zip(output_dirs, parts)]


# ---------------------------------------------------------------------------------------------
# grouping and tables


# what must be equal for two runs to differ only in the method: (name shown to the user, read_config key)
PAIRING_FIELDS = (
    ("training data (dataloader.train.dataset.names)", "train_datasets"),
    ("test data (dataloader.test.dataset.names)", "test_datasets"),
    ("schedule (train.max_iter)", "max_iter"),
    ("batch (dataloader.train.total_batch_size)", "batch_size"),
    ("base lr (optimizer.lr)", "base_lr"),
    ("lr steps (lr_multiplier)", "lr_steps"),
    ("backbone (model.backbone)", "backbone"),
    ("meta-architecture (Detectron2 class of model._target_)", "model_family"),
)


def pairing_fields(run: Dict) -> "OrderedDict[str, object]":
    """``{field name: value}`` of :data:`PAIRING_FIELDS` for one run (its config.yaml)."""
    c = run["config"]
    if c is None:
        return OrderedDict([("config.yaml", f"missing in {run['dir']}")])
    return OrderedDict((name, c[key]) for name, key in PAIRING_FIELDS)


def pairing_differences(run: Dict, baseline: Dict) -> List[str]:
    """"field: baseline value → run value" for each pairing field in which ``run`` differs from
    ``baseline``; empty when the two runs differ only in the method (and seed)."""
    a, b = pairing_fields(baseline), pairing_fields(run)
    return [f"{k}: {a.get(k, '(absent)')} → {b.get(k, '(absent)')}" for k in list(a) + [k for k in b if k not in a]
            if a.get(k) != b.get(k)]


def group_key(run: Dict) -> Tuple:
    """What must be equal for two runs to differ only in the method (:data:`PAIRING_FIELDS`)."""
    return tuple(pairing_fields(run).values()) if run["config"] is not None else ("no config.yaml", run["dir"])


def describe_group(run: Dict) -> str:
    c = run["config"]
    if c is None:
        return f"{run['name']} (no config.yaml)"
    steps = c["lr_steps"]
    steps = "lr steps unknown" if steps is None else (
        "no lr steps" if not steps else "smooth lr decay" if steps == ("continuous",)
        else "steps at " + ", ".join(str(s) for s in steps))
    lr = f"lr {c['base_lr']:g}" if c["base_lr"] is not None else "lr -"
    return (f"{'+'.join(c['train_datasets']) or '-'} → {'+'.join(c['test_datasets']) or '-'}, "
            f"{c['max_iter']} it × {c['batch_size']} img, {lr}, {steps}, {c['model_family']}")


def _matches(run: Dict, name: str) -> bool:
    name = os.path.normpath(name)
    return name in (run["name"], os.path.basename(os.path.normpath(run["dir"])), os.path.normpath(run["dir"]))


def group_runs(runs: Sequence[Dict], baseline: Optional[str] = None) -> List[Dict]:
    """Runs grouped by :func:`group_key`, in first-appearance order. Each group is
    ``{"description", "runs" (baseline first, then input order), "baseline" (a run or None),
    "notes"}``; the baseline is the run matching ``baseline`` (name or folder), else the first
    stock-Detectron2 model, else None."""
    groups: "OrderedDict[Tuple, List[Dict]]" = OrderedDict()
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    out = []
    for members in groups.values():
        notes = []
        chosen = [r for r in members if baseline is not None and _matches(r, baseline)]
        if not chosen:
            chosen = [r for r in members if r["config"] is not None and r["config"]["stock_model"]]
            if len(chosen) > 1:
                notes.append(f"{len(chosen)} stock models in this group; the baseline is the first, "
                             f"{chosen[0]['name']} (choose with --baseline)")
        base = chosen[0] if chosen else None
        if base is None and len(members) > 1:
            notes.append("no stock Detectron2 model in this group: pass --baseline NAME to compare")
        ordered = ([base] if base else []) + [r for r in members if r is not base]
        out.append({"description": describe_group(members[0]), "runs": ordered, "baseline": base, "notes": notes})
    return out


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def config_differences(run: Dict, baseline: Dict, limit: int = 12) -> List[str]:
    """"key: baseline value → run value" for the config leaves that differ (paths left out)."""
    if run["config"] is None or baseline["config"] is None:
        return []
    a, b = baseline["config"]["flat"], run["config"]["flat"]
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(IGNORED_CONFIG_KEYS))
    out = [f"`{k}`: {_short(a.get(k, '(absent)'))} → {_short(b.get(k, '(absent)'))}" for k in keys[:limit]]
    if len(keys) > limit:
        out.append(f"… and {len(keys) - limit} more")
    return out


def _short(value, n: int = 60) -> str:
    text = str(value)
    return text if len(text) <= n else text[: n - 1] + "…"
