"""Model-zoo style report of train_net.py runs: the table of Detectron2's MODEL_ZOO.md, side-by-side
comparisons of runs that differ only in the method, training curves, and each run's provenance.

    python tools/report.py OUTPUT_DIR... [--out DIR] [--baseline NAME] [--title T] [--smooth N]

(``tools/report.py`` is the command line of :func:`build_report`.)
Reads from each OUTPUT_DIR (a train.output_dir of train_net.py) only what the run wrote itself:
metrics.json (Detectron2's JSONWriter), eval_results.json, config.yaml, provenance.json and, for
the inference time of runs that predate "inference_compute_s_per_image" in eval_results.json,
log.txt. Writes DIR/report.md (default DIR: report/), DIR/training_curves.png (smoothed total_loss
and lr against the iteration, all runs on one plot), DIR/loss_terms.png (one panel per loss term),
DIR/method_stats.png (one panel per statistic the methods log: clean_anchors/*, swn/*) and, when a
dataset has more than one class, a per-class box AP table; and prints the tables.

Columns and how they are measured:
  lr sched         "1x" etc. when max_iter x total_batch_size equals Detectron2's 90k iterations x
                   16 images (times the factor), otherwise "<max_iter> it × <batch> img"
  train time       median of metrics.json's "time" (seconds per iteration; each logged value is
                   already JSONWriter's median over the last 20 iterations) over the lines of
                   iteration >= 20, so the slow first iterations are left out
  inference time   Detectron2's pure compute time per image (model calls only, the first 5 batches
                   left out): eval_results.json "inference_compute_s_per_image" ("..._tta" for the
                   TTA rows), else the last "Total inference pure compute time: ... (X s / iter per
                   device, ...)" line of log.txt (one image per iteration and device, as in
                   Detectron2's test loader), else (marked *) "inference_s_per_image", the wall
                   time of the whole inference loop, data loading and worker start-up included
  train mem        the largest "peak_mem_mb" in metrics.json (detkit.engine.PeakMemory:
                   torch.cuda.max_memory_allocated on a GPU, peak RSS of the main process on the CPU)
  box AP ... APl   COCO box metrics; "mask AP" and "prop. AR" (AR@1000) columns appear when a run
                   has segm / box_proposals results, "AP40", "P40", "R40" (AP, precision and
                   recall at IoU 0.4, detkit.evaluation.iou_metrics) when a run has them; NaN (a size bucket with no objects) shows "-"

Runs with the same training and test datasets, max_iter, batch size, base lr, lr steps, backbone and
Detectron2 meta-architecture (the Detectron2 class a method's model derives from) form a group; in
each group of two or more, every run is compared with the baseline: the run named by --baseline,
else the first run whose model is stock Detectron2 (every _target_ under `model` in detectron2.* or
detkit.*). The comparison also lists the config keys in which each run differs from the baseline.
"""
import datetime
import math
import os
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .runs import (
    TIME_SKIP_ITERS,
    ReportError,
    _is_number,
    _matches,
    config_differences,
    group_runs,
    load_runs,
)

BOX_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
# metrics.json keys of the methods' own statistics (method_stats.png)
METHOD_STAT_PREFIXES = ("clean_anchors/", "swn/")
MINUS = "\u2212"


def fmt(value, digits: int = 2, sign: bool = False) -> str:
    """A table cell: "-" for missing or NaN; signed differences use a real minus sign."""
    if not _is_number(value) or math.isnan(value):
        return "-"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return text.replace("-", MINUS) if sign else text


def _columns(runs: Sequence[Dict]) -> List[Tuple[str, str, str]]:
    """(header, task, metric) of the AP columns, mask AP / prop. AR only when some run has them."""
    cols = [("box AP" if m == "AP" else m, "bbox", m) for m in BOX_METRICS]
    # detkit.evaluation.iou_metrics' AP / precision / recall at one IoU (AP40, P40, R40: tree crowns)
    extra = sorted({m for r in runs for ev in r["results"].values() for m in ev.get("bbox", {})
                    if re.fullmatch(r"(AP|P|R)\d\d", m) and m not in BOX_METRICS}, key=lambda m: (m[-2:], m[:-2]))
    cols += [(m, "bbox", m) for m in extra]
    tasks = {t for r in runs for ev in r["results"].values() for t in ev}
    if "segm" in tasks:
        cols.append(("mask AP", "segm", "AP"))
    if "box_proposals" in tasks:
        cols.append(("prop. AR", "box_proposals", "AR@1000"))
    return cols


def _inference_for(run: Dict, evaluation: str):
    """Seconds per image of ``evaluation`` ("", "TTA", a dataset name): its own time when the run
    saved one, else the run's plain time for a per-dataset evaluation (not for TTA)."""
    times = run["inference_s_per_image"]
    if evaluation.lower().endswith("tta"):  # "TTA", "<dataset> TTA", Detectron2's "<dataset>_TTA"
        return times.get("tta")
    return times.get(evaluation.lower(), times.get(""))


def _inference_cell(run: Dict, evaluation: str) -> str:
    """The inference time of ``evaluation``, with "*" when it is the loop's wall time (older runs
    without Detectron2's pure compute time)."""
    key = "tta" if evaluation.lower().endswith("tta") else evaluation.lower()
    key = key if key in run["inference_s_per_image"] else ""
    wall = run.get("inference_kind", {}).get(key) == "wall"
    cell = fmt(_inference_for(run, evaluation), 3)
    return cell + "*" if wall and cell != "-" else cell


def _lr_sched_cell(run: Dict) -> str:
    if run["config"] is None:
        return "-"
    cell = run["config"]["lr_sched"]
    trained = run["iterations_trained"]
    if _is_number(trained) and run["config"]["max_iter"] and trained != run["config"]["max_iter"]:
        cell += f" (evaluated at {trained} it)"
    return cell


def _metric(run: Dict, evaluation: str, task: str, metric: str):
    return run["results"].get(evaluation, {}).get(task, {}).get(metric)


def table_rows(
    runs: Sequence[Dict], baseline: Optional[Dict] = None, columns=None
) -> Tuple[List[str], List[List[str]]]:
    """Header and rows of the MODEL_ZOO.md table for ``runs``: one row per run and evaluation
    (a run evaluated on several datasets or with TTA has several rows), each non-baseline row
    followed by its AP difference to the baseline's row of the same evaluation."""
    columns = columns or _columns(runs)
    header = ["name", "lr sched", "train time (s/iter)", "inference time (s/im)", "train mem (GB)"]
    header += [c[0] for c in columns]
    rows = []
    for run in runs:
        for evaluation in list(run["results"]) or [""]:
            name = f"{run['name']} [{evaluation}]" if evaluation else run["name"]
            rows.append([name, _lr_sched_cell(run), fmt(run["s_per_iter"], 3),
                         _inference_cell(run, evaluation), fmt(run["train_mem_gb"], 2)]
                        + [fmt(_metric(run, evaluation, t, m)) for _, t, m in columns])
            if baseline is not None and run is not baseline and evaluation in baseline["results"]:
                diff = [_sub(_metric(run, evaluation, t, m), _metric(baseline, evaluation, t, m))
                        for _, t, m in columns]
                rows.append([f"Δ vs {baseline['name']}", "", "", "", ""] + [fmt(d, sign=True) for d in diff])
    return header, rows


def _sub(a, b):
    return a - b if _is_number(a) and _is_number(b) else None


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table, numeric columns right-aligned, cells padded for reading as text."""
    numeric = [i >= 2 for i in range(len(header))]
    widths = [max(len(str(x)) for x in [h] + [r[i] for r in rows]) for i, h in enumerate(header)]

    def line(cells):
        return "| " + " | ".join(
            str(c).rjust(w) if num else str(c).ljust(w) for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if num else ":" + "-" * (w + 1) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


# ---------------------------------------------------------------------------------------------
# curves


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Centred running median over ``window`` points (odd; shrinks at the ends). A median, as in
    Detectron2's writers, so that the rare loss spikes do not drag the curve as an EMA would."""
    values = np.asarray(values, dtype=float)
    half = max(0, int(window)) // 2
    if half == 0 or len(values) == 0:
        return values
    return np.array([np.nanmedian(values[max(0, i - half): i + half + 1]) for i in range(len(values))])


def auto_window(num_points: int) -> int:
    """The smoothing window for a curve of ``num_points`` logged values: none for short runs
    (each value is already a 20-iteration median), up to 51 points for long ones."""
    return min(51, max(1, num_points // 25) | 1)


def _series(run: Dict, key: str):
    points = [(m["iteration"], m[key]) for m in run["metrics"] if _is_number(m.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(runs: Sequence[Dict], out_dir: str, window: Optional[int] = None) -> List[str]:
    """Write ``training_curves.png`` (total_loss, raw and smoothed with :func:`smooth` over
    ``window`` logged points, default :func:`auto_window` of the longest run; and lr
    against the iteration, all runs), ``loss_terms.png`` (one panel per ``loss_*`` key that
    any run logs) and ``method_stats.png`` (one per :data:`METHOD_STAT_PREFIXES` key) into ``out_dir``;
    short curves get markers; returns the paths written (none when no run has losses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    colors = {r["name"]: plt.cm.tab10(i % 10) for i, r in enumerate(runs)}
    paths = []
    with_loss = [r for r in runs if _series(r, "total_loss")[0]]
    if not with_loss:
        return paths
    if window is None:
        window = auto_window(max(len(_series(r, "total_loss")[0]) for r in with_loss))

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for run in with_loss:
        it, loss = _series(run, "total_loss")
        marker = _marker(len(it))
        ax_loss.plot(it, loss, color=colors[run["name"]], alpha=0.25, linewidth=0.8)
        ax_loss.plot(it, smooth(loss, window), color=colors[run["name"]], label=run["name"], linewidth=1.6, **marker)
        it_lr, lr = _series(run, "lr")
        if it_lr:
            ax_lr.plot(it_lr, lr, color=colors[run["name"]], linewidth=1.2, **_marker(len(it_lr)))
    ax_loss.set_ylabel("total_loss")
    smoothing = f"bold: running median of {window} logged points" if window > 1 else "not smoothed further"
    ax_loss.set_title(f"total_loss (faint: metrics.json, each a 20-iteration median; {smoothing})", fontsize=10)
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("iteration")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "training_curves.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    terms = sorted({k for r in with_loss for m in r["metrics"] for k in m
                    if k.startswith("loss_") and _is_number(m[k])})
    if terms:
        paths.append(_panels(plt, with_loss, terms, colors, window, os.path.join(out_dir, "loss_terms.png")))
    stats = sorted({k for r in runs for m in r["metrics"] for k in m
                    if k.startswith(METHOD_STAT_PREFIXES) and _is_number(m[k])})
    if stats:
        paths.append(_panels(plt, runs, stats, colors, window, os.path.join(out_dir, "method_stats.png")))
    return paths


def _marker(num_points: int) -> Dict:
    """Markers for short curves (a run with one logged point is otherwise an invisible line)."""
    return {"marker": "o", "markersize": 4 if num_points <= 3 else 2.5} if num_points <= 50 else {}


def _panels(plt, runs, keys, colors, window, path) -> str:
    """One panel per metrics.json key, every run that logs it (smoothed as the loss curves)."""
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows + 0.4), squeeze=False)
    shown = {}
    for ax, key in zip(axes.flat, keys):
        for run in runs:
            it, values = _series(run, key)
            if it:
                shown[run["name"]] = ax.plot(it, smooth(values, window), color=colors[run["name"]],
                                             label=run["name"], linewidth=1.2, **_marker(len(it)))[0]
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    # one legend for the figure: a run may log only some of the keys (each method its own)
    fig.legend(list(shown.values()), list(shown), loc="upper center", ncol=min(3, len(shown)), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (3.2 * rows + 0.4)))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# per-class AP


def per_class_table(runs: Sequence[Dict]) -> Optional[str]:
    """Markdown table of COCOEvaluator's per-class box AP ("AP-<class>", which it logs when a
    dataset has more than one class): a row per run and evaluation, a column per class; None when
    no run has more than one class."""
    classes: List[str] = []
    for run in runs:
        for ev in run["results"].values():
            for metric in ev.get("bbox", {}):
                if metric.startswith("AP-") and metric[3:] not in classes:
                    classes.append(metric[3:])
    if len(classes) < 2:
        return None
    rows = []
    for run in runs:
        for evaluation, ev in run["results"].items():
            name = f"{run['name']} [{evaluation}]" if evaluation else run["name"]
            rows.append([name] + [fmt(ev.get("bbox", {}).get(f"AP-{c}")) for c in classes])
    return _class_table(["name"] + classes, rows)


def _class_table(header, rows) -> str:
    # markdown_table right-aligns columns from the third on; here every AP column is numeric
    widths = [max(len(str(x)) for x in [h] + [r[i] for r in rows]) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    rule = "|" + "|".join(":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


# ---------------------------------------------------------------------------------------------
# provenance section and the whole report


def _device_text(p: Dict) -> str:
    d = p.get("device") or {}
    if d.get("name") and d.get("name") != "cpu":
        text = f"{d['name']} ({d.get('device', 'cuda')})"
    else:
        text = f"CPU {d.get('cpu', '')}".strip() + f", torch threads: {d.get('num_threads', '-')}"
    return f"{text}; {p.get('world_size', '-')} process(es) on {p.get('hostname', '-')}"


def provenance_lines(run: Dict) -> List[str]:
    """The Markdown bullet list of one run's provenance section."""
    lines = [f"- folder: `{run['dir']}`"]
    c = run["config"]
    if c is not None:
        stock = ", stock Detectron2" if c["stock_model"] else ""
        base_lr = "-" if c["base_lr"] is None else format(c["base_lr"], "g")
        trained = "-" if run["iterations_trained"] is None else run["iterations_trained"]
        lines.append(f"- model: `{c['model_target']}` ({c['model_family']}{stock}); base lr {base_lr}; "
                     f"iterations trained {trained}")
    lines.append(f"- train time: {run['time_note']}; inference time from {run['inference_source'] or '-'}")
    p = run["provenance"]
    if p is None:
        seed = c["seed"] if c is not None and c["seed"] is not None else "-"
        lines.append(f"- no provenance.json (config hash, commit, versions, device: -); seed in config.yaml: {seed}")
    else:
        git = p.get("git") or {}
        dirty = {True: " (uncommitted changes)", False: " (clean)"}.get(git.get("dirty"), "")
        versions = p.get("versions") or {}
        lines += [
            f"- config: `{p.get('config_file', '-')}`, sha256 `{p.get('config_sha256') or '-'}`",
            f"- git commit: `{git.get('commit') or '-'}`{dirty}",
            f"- seed: {p.get('seed', '-')}",
            "- versions: " + ", ".join(
                f"{k} {versions.get(k) or '-'}" for k in ("python", "torch", "torchvision", "detectron2")),
            f"- device: {_device_text(p)}",
            f"- started (UTC): {p.get('start_time_utc', '-')}",
            f"- command: `{p.get('command', '-')}`",
        ]
        for i, r in enumerate(p.get("resumes", []), 1):
            commit = (r.get("git") or {}).get("commit") or "-"
            lines.append(f"- resumed ({i}): {r.get('start_time_utc', '-')}, commit `{commit}`, "
                         f"command `{r.get('command', '-')}`")
    e = run["provenance_eval"]
    if e is not None:
        lines.append(f"- last --eval-only: {e.get('start_time_utc', '-')}, checkpoint "
                     f"`{e.get('init_checkpoint') or '-'}`, command `{e.get('command', '-')}`")
    other = [n for n in run["notes"] if n != "no provenance.json"]
    if other:
        lines.append("- notes: " + "; ".join(other))
    return lines


MEASUREMENT_NOTE = (
    f"Train time: median s/iter of metrics.json over iterations ≥ {TIME_SKIP_ITERS} (each logged value is "
    "the median of the last 20 iterations). Inference time: Detectron2's pure compute time per image (the "
    "model calls, the first 5 batches left out as warmup; eval_results.json, older runs: log.txt); * marks "
    "runs with neither: the wall time of their inference loop, data loading included. Train mem: peak "
    "`torch.cuda.max_memory_allocated` on a GPU, peak RSS of the main process on the CPU. AP: COCO, "
    '"-" where undefined (NaN: no objects of that size) or not available.'
)


def comparison_sections(groups: Sequence[Dict], columns) -> Tuple[List[str], List[str]]:
    """Markdown and plain-text lines of the groups with two or more runs."""
    md, text = [], []
    for g in (g for g in groups if len(g["runs"]) > 1):
        table = markdown_table(*table_rows(g["runs"], g["baseline"], columns))
        md += [f"### {g['description']}", "", table, ""] + [f"Note: {n}\n" for n in g["notes"]]
        text += [g["description"], table] + [f"Note: {n}" for n in g["notes"]] + [""]
        for run in g["runs"][1:] if g["baseline"] is not None else []:
            diffs = config_differences(run, g["baseline"])
            if diffs:
                md += [f"Config of {run['name']} vs {g['baseline']['name']}:", ""] + [f"- {d}" for d in diffs] + [""]
    return md, text


def build_report(output_dirs: Sequence[str], out_dir: str, baseline: Optional[str] = None,
                 title: str = "Model-zoo report", window: Optional[int] = None) -> Tuple[str, str]:
    """Load the runs, write ``out_dir``/report.md and the PNG curves; returns (Markdown, the
    plain-text tables printed by the CLI)."""
    runs = load_runs(output_dirs)
    if baseline is not None and not any(_matches(r, baseline) for r in runs):
        raise ReportError(f"--baseline {baseline}: no such run (runs: {', '.join(r['name'] for r in runs)})")
    groups = group_runs(runs, baseline)
    columns = _columns(runs)
    main_table = markdown_table(*table_rows(runs, None, columns))
    devices = OrderedDict()
    for r in runs:
        device = _device_text(r["provenance"]) if r["provenance"] else "unknown (no provenance.json)"
        devices.setdefault(device, []).append(r["name"])
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    md = [f"# {title}", "", f"Generated {now} by `tools/report.py` from {len(runs)} run folder(s).", "",
          "## Runs", "", main_table, "", MEASUREMENT_NOTE, "",
          "Measured on: " + "; ".join(f"{d} ({', '.join(names)})" for d, names in devices.items()), ""]
    text = [title, "", main_table, ""]
    compared_md, compared_text = comparison_sections(groups, columns)
    if compared_md:
        md += ["## Comparisons", "", "Runs with the same data, schedule, batch, base lr, backbone and "
               "meta-architecture; Δ rows: the run minus the baseline.", ""] + compared_md
        text += compared_text
    classes = per_class_table(runs)
    if classes:
        md += ["## Per-class box AP", "", classes, ""]
        text += ["Per-class box AP", classes, ""]
    pngs = plot_training_curves(runs, out_dir, window)
    if pngs:
        md += ["## Training curves", ""]
        md += [f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.basename(p)})" for p in pngs] + [""]
        if any(p.endswith("method_stats.png") for p in pngs):
            md += ["method_stats.png: the methods' own statistics as logged in metrics.json "
                   f"({', '.join(k + '*' for k in METHOD_STAT_PREFIXES)}).", ""]
    md += ["## Provenance", ""]
    for run in runs:
        md += [f"### {run['name']}", ""] + provenance_lines(run) + [""]
    missing = [r["name"] for r in runs if r["provenance"] is None]
    if missing:
        text.append(f"no provenance.json: {', '.join(missing)}")

    markdown = "\n".join(md).rstrip() + "\n"
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown)
    text.append(f"written: {os.path.join(out_dir, 'report.md')}" + "".join(f", {p}" for p in pngs))
    return markdown, "\n".join(text)
