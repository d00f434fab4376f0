"""The report of a multi-seed study: ``study.json`` (every number), ``study.md`` (the tables) and
``study.png`` (each run a dot per config, the means as bars).

For each config and metric: mean ± sample std, min / max over seeds. For each compared config: the
per-seed paired difference to the baseline (same seed), its mean, the 95 % Student-t and bootstrap
intervals and a verdict ("better" / "worse" / "within noise" when the t interval contains 0).
Runs are read with :mod:`detkit.runs` (what tools/report.py reads) and must pair: a compared run that
differs from the baseline in anything but the method and seed (data, schedule, batch, lr, lr steps,
backbone, meta-architecture: :data:`detkit.runs.PAIRING_FIELDS`) is refused, naming the field.
"""
import json
import math
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from ..runs import load_run, pairing_differences
from .runner import RunSpec, StudyError
from .stats import compare, format_interval, summary

DEFAULT_METRICS = ("AP", "AP50", "AP75", "AP40", "P40", "R40")


def load_study_runs(specs: Sequence[RunSpec]) -> "OrderedDict[str, Dict[int, Dict]]":
    """``{config name: {seed: detkit.runs.load_run(...)}}`` of the runs that have an
    eval_results.json after their last iteration (others are left out)."""
    from .runner import run_state

    out: "OrderedDict[str, Dict[int, Dict]]" = OrderedDict()
    for spec in specs:
        out.setdefault(spec.name, {})
        if run_state(spec) == "finished":
            out[spec.name][spec.seed] = load_run(spec.output_dir, f"{spec.name}/seed{spec.seed}")
    return out


def check_pairing(runs: "OrderedDict[str, Dict[int, Dict]]", baseline: str) -> List[str]:
    """Refuse runs that do not pair with the baseline's (StudyError naming the run and the field);
    also each run's saved ``train.seed`` must be its seed. Returns notes on what may differ without
    refusal (commit, threads)."""
    base_runs = runs.get(baseline) or {}
    if not base_runs:
        raise StudyError(f"No finished run of the baseline {baseline!r}: nothing to compare with.")
    reference = base_runs[min(base_runs)]
    commits, threads = set(), set()
    for name, by_seed in runs.items():
        for seed, run in by_seed.items():
            if run["config"] is None:
                raise StudyError(f"{run['dir']}: no config.yaml, cannot check that it pairs with the baseline.")
            saved_seed = run["config"]["seed"]
            if saved_seed is not None and int(saved_seed) != seed:
                raise StudyError(f"{run['dir']}: config.yaml has train.seed={saved_seed}, but the study's "
                                 f"folder says seed {seed}.")
            diffs = pairing_differences(run, reference)
            if diffs:
                raise StudyError(
                    f"{name} seed {seed} ({run['dir']}) differs from the baseline {baseline} seed "
                    f"{min(base_runs)} in more than the method and seed: " + "; ".join(diffs)
                    + ". Such runs are not a pairing: give both the same settings."
                )
            p = run.get("provenance") or {}
            commits.add((p.get("git") or {}).get("commit"))
            threads.add((p.get("device") or {}).get("num_threads"))
    notes = []
    commits.discard(None)
    if len(commits) > 1:
        notes.append(f"runs were started from {len(commits)} commits: "
                     + ", ".join(sorted(c[:10] for c in commits)))
    threads.discard(None)
    if len(threads) > 1:
        notes.append(f"runs used different intra-op thread counts {sorted(threads)} (changes results bit-wise)")
    return notes


def metric_values(runs: Dict[int, Dict], metric: str, task: str = "bbox", evaluation: str = "") -> Dict[int, float]:
    out = {}
    for seed, run in runs.items():
        value = run["results"].get(evaluation, {}).get(task, {}).get(metric)
        out[seed] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    return out


def available_metrics(runs: "OrderedDict[str, Dict[int, Dict]]", wanted: Sequence[str], task: str = "bbox") -> List[str]:
    """The ``wanted`` metrics that every finished run reports."""
    every = [r for by_seed in runs.values() for r in by_seed.values()]
    return [m for m in wanted if every and all(m in r["results"].get("", {}).get(task, {}) for r in every)]


def study_results(runs: "OrderedDict[str, Dict[int, Dict]]", baseline: str, metrics: Sequence[str] = DEFAULT_METRICS,
                  task: str = "bbox", confidence: float = 0.95, resamples: int = 10000, bootstrap_seed: int = 0,
                  notes: Optional[List[str]] = None, meta: Optional[Dict] = None) -> Dict:
    """Everything study.json holds: per config and metric the per-seed values and their summary; per
    compared config and metric the paired comparison (:func:`detkit.study.stats.compare`)."""
    metrics = available_metrics(runs, metrics, task)
    if not metrics:
        raise StudyError(f"The finished runs share none of the metrics {list(metrics)} for task {task!r}.")
    configs = OrderedDict()
    for name, by_seed in runs.items():
        configs[name] = {
            "seeds": sorted(by_seed),
            "dirs": {str(s): _relative(by_seed[s]["dir"]) for s in sorted(by_seed)},
            "iterations": {str(s): by_seed[s]["iterations_trained"] for s in sorted(by_seed)},
            "metrics": {m: {"values": {str(s): v for s, v in sorted(metric_values(by_seed, m, task).items())},
                            **summary(list(metric_values(by_seed, m, task).values()))} for m in metrics},
        }
    comparisons = OrderedDict()
    base = runs[baseline]
    for name, by_seed in runs.items():
        if name == baseline:
            continue
        comparisons[name] = {
            m: compare(metric_values(base, m, task), metric_values(by_seed, m, task), confidence, resamples, bootstrap_seed)
            for m in metrics
        }
    return {
        "baseline": baseline,
        "task": task,
        "metrics": list(metrics),
        "confidence": confidence,
        "bootstrap": {"resamples": resamples, "seed": bootstrap_seed},
        "configs": configs,
        "comparisons": comparisons,
        "notes": list(notes or []),
        **(meta or {}),
    }


def _relative(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (a report to publish)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _f(x: float, digits: int = 2, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return (f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}").replace("-", "\u2212")


def markdown(results: Dict, title: str = "Study", png: Optional[str] = "study.png") -> str:
    """study.md: the per-config table (mean ± std [min, max]) and the paired comparisons."""
    metrics, lines = results["metrics"], [f"# {title}", ""]
    meta = results.get("command")
    if meta:
        lines += ["Command:", "", "```", meta, "```", ""]
    for key in ("commit", "machine", "jobs", "threads", "wall_minutes"):
        if results.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: {results[key]}")
    lines += ["", f"## Per config: mean ± sample std over seeds, [min, max] ({results['task']})", ""]
    header = ["config", "seeds"] + metrics
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join([":--"] * 2 + ["--:"] * len(metrics)) + "|"]
    for name, c in results["configs"].items():
        cells = [name, ", ".join(str(s) for s in c["seeds"])]
        for m in metrics:
            s = c["metrics"][m]
            cells.append(f"{_f(s['mean'])} ± {_f(s['std'])} [{_f(s['min'])}, {_f(s['max'])}]")
        lines.append("| " + " | ".join(cells) + " |")
    pct = round(100 * results["confidence"])
    for name, comp in results["comparisons"].items():
        lines += ["", f"## {name} − {results['baseline']} (paired by seed)", "",
                  f"| metric | per-seed differences | mean | {pct} % t interval | {pct} % bootstrap | verdict |",
                  "|:--|:--|--:|:--|:--|:--|"]
        for m in metrics:
            c = comp[m]
            per_seed = ", ".join(f"{s}: {_f(d, sign=True)}" for s, d in zip(c["seeds"], c["diffs"]))
            lines.append(f"| {m} | {per_seed} | {_f(c['mean'], sign=True)} | {format_interval(c['t_interval'])} | "
                         f"{format_interval(c['bootstrap_interval'])} | {c['verdict']} |")
    lines += [
        "",
        f"Verdict: \"better\" / \"worse\" when the {pct} % Student-t interval of the mean paired difference "
        f"(n − 1 degrees of freedom) excludes 0, else \"within noise\". The percentile bootstrap "
        f"({results['bootstrap']['resamples']} resamples, seed {results['bootstrap']['seed']}) is shown beside it; "
        "with few seeds it is narrower than it should be (it never reaches beyond the observed differences).",
    ]
    if results.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in results["notes"]]
    if png:
        lines += ["", f"![each run as a dot, means as bars]({png})"]
    return "\n".join(lines) + "\n"


def plot(results: Dict, path: str) -> str:
    """One panel per metric: each run a dot (colour = seed, thin lines join a seed's runs across
    configs, so the pairing shows), the mean of each config a black bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, names = results["metrics"], list(results["configs"])
    seeds = sorted({int(s) for c in results["configs"].values() for s in c["seeds"]})
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.2 + 2.0 * len(metrics) * max(1, len(names)) / 2.5, 3.6),
                             squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for k, seed in enumerate(seeds):
            xs, ys = [], []
            for i, name in enumerate(names):
                v = results["configs"][name]["metrics"][m]["values"].get(str(seed))
                if v is not None and math.isfinite(v):
                    xs.append(i + (k - (len(seeds) - 1) / 2) * 0.06)
                    ys.append(v)
            ax.plot(xs, ys, "-", color=cmap(k % 10), alpha=0.25, lw=0.8)
            ax.plot(xs, ys, "o", color=cmap(k % 10), ms=5, label=f"seed {seed}")
        for i, name in enumerate(names):
            mean = results["configs"][name]["metrics"][m]["mean"]
            if math.isfinite(mean):
                ax.hlines(mean, i - 0.25, i + 0.25, colors="k", lw=2)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([_short_name(n) for n in names], rotation=30, ha="right", fontsize=8)
        ax.set_title(m)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short_name(name: str) -> str:
    return name.replace("_mnv2_fpn", "").replace("clean_anchors", "CleanAnchors").replace("swn_", "SWN ")


def write_study(results: Dict, out_dir: str, title: str = "Study") -> Dict[str, str]:
    """Write study.json, study.md and study.png into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"study.{k}") for k in ("json", "md", "png")}
    with open(paths["json"], "w") as f:
        json.dump(results, f, indent=2, allow_nan=True)
    plot(results, paths["png"])
    with open(paths["md"], "w") as f:
        f.write(markdown(results, title, png="study.png"))
    return paths
