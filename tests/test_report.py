"""tools/report.py on fake run folders in Detectron2's real file formats, detkit.engine's provenance
record and the PeakMemory hook."""
import hashlib
import json
import math
import os
import runpy
import sys
import types

import pytest
from detectron2.config import LazyConfig
from detectron2.engine import default_argument_parser
from detectron2.utils.events import EventStorage

from conftest import REPO_ROOT
from detkit.engine import PeakMemory, write_provenance
from detkit.engine.provenance import collect_provenance, git_state
from model_utils import load_synthetic_cfg

import detkit.runs as run_reader
from detkit import report


def _report_cli(argv):
    # by path: a site-packages "tools" package (from the Detectron2 wheel) shadows this repo's tools/
    return runpy.run_path(os.path.join(REPO_ROOT, "tools", "report.py"))["main"](argv)

RETINANET = "configs/Synthetic/retinanet_mnv2_fpn.py"
CLEAN_ANCHORS = "configs/Synthetic/clean_anchors_retinanet_mnv2_fpn.py"
NAN = float("nan")


def _args(config, *opts, flags=()):
    return default_argument_parser().parse_args(["--config-file", os.path.join(REPO_ROOT, config), *flags, *opts])


def make_run(root, name, config, max_iter, times, total_loss, bbox, segm=None, provenance=True,
             inference=None, log_inference=None, peak_mem=(900.0, 1200.0), tta=None, compute=None,
             extra_metrics=None):
    """A train_net.py output folder: config.yaml (LazyConfig.save, as default_setup writes it),
    metrics.json (JSONWriter lines every 20 iterations plus the final evaluation line),
    eval_results.json, optionally provenance.json and a log.txt with the inference line."""
    out = os.path.join(root, name)
    os.makedirs(out)
    opts = [f"train.max_iter={max_iter}", "dataloader.train.total_batch_size=2", f"train.output_dir={out}"]
    cfg = load_synthetic_cfg(os.path.basename(config), *opts)
    LazyConfig.save(cfg, os.path.join(out, "config.yaml"))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        for k, (t, loss) in enumerate(zip(times, total_loss)):
            line = {"iteration": 20 * k + 19, "time": t, "data_time": 0.01, "lr": 0.01, "total_loss": loss,
                    "loss_cls": loss * 0.6, "loss_box_reg": loss * 0.4, "eta_seconds": 1.0}
            if peak_mem is not None:
                line["peak_mem_mb"] = peak_mem[min(k, len(peak_mem) - 1)]
            line.update(extra_metrics or {})
            f.write(json.dumps(line, sort_keys=True) + "\n")
        f.write(json.dumps({"iteration": max_iter, **{f"bbox/{k}": v for k, v in bbox.items()}}) + "\n")
    results = {"bbox": bbox} if segm is None else {"bbox": bbox, "segm": segm}
    saved = {"iterations_trained": max_iter, "results": results}
    if inference is not None:
        saved["inference_s_per_image"] = inference
    if compute is not None:  # train_net since the pure compute time is recorded
        saved["inference_compute_s_per_image"] = compute
    if tta is not None:  # train_net's TTA evaluation: "<task>_TTA" results and their own time
        results["bbox_TTA"], saved["inference_s_per_image_tta"] = tta
    with open(os.path.join(out, "eval_results.json"), "w") as f:
        json.dump(saved, f, indent=2)  # NaN as Detectron2's results give it
    if log_inference is not None:
        with open(os.path.join(out, "log.txt"), "w") as f:
            f.write("[11/22 13:26:43] d2.evaluation.evaluator INFO: Total inference pure compute time: "
                    f"0:00:01 ({log_inference:f} s / iter per device, on 1 devices)\n")
    if provenance:
        write_provenance(cfg, _args(config, *opts), out, device="cpu")
    return out


def bbox(ap, ap50=50.0, apl=NAN):
    return {"AP": ap, "AP50": ap50, "AP75": ap / 2, "APs": 5.0, "APm": 12.5, "APl": apl}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    # the baseline: stock RetinaNet; the first line (iterations 0-19) is slow and left out
    make_run(root, "retinanet", RETINANET, 200, [9.0, 0.5, 0.7, 0.6, 0.65], [2.0, 1.5, 1.2, 1.0, 0.9],
             bbox(10.0), inference=0.05)
    # the method on the same data/schedule/batch; an older run without provenance
    make_run(root, "clean_anchors", CLEAN_ANCHORS, 200, [9.0, 0.8, 0.9, 1.0, 1.1], [2.2, 1.6, 1.3, 1.1, 1.0],
             bbox(12.5, ap50=48.0), provenance=False, log_inference=0.0625, peak_mem=None)
    # the method on a longer schedule: nothing to compare with; has mask AP
    make_run(root, "clean_anchors_long", CLEAN_ANCHORS, 400, [0.4] * 10, [1.0] * 10,
             bbox(20.0, apl=30.0), segm={"AP": 18.25, "AP50": 40.0}, inference=0.1, tta=(bbox(21.0), 0.8))
    return root


@pytest.fixture(scope="module")
def runs(runs_root):
    return run_reader.load_runs([os.path.join(runs_root, n) for n in ("retinanet", "clean_anchors", "clean_anchors_long")])


def test_load_run_values(runs):
    base, method, long = runs
    assert base["s_per_iter"] == pytest.approx(0.625)  # median of 0.5, 0.7, 0.6, 0.65: the 9.0 is excluded
    assert "iterations >= 20" in base["time_note"]
    assert method["s_per_iter"] == pytest.approx(0.95)
    assert base["train_mem_gb"] == pytest.approx(1200.0 / 1024)
    assert method["train_mem_gb"] is None
    # no pure compute time anywhere: the loop's wall time, said so
    assert base["inference_s_per_image"] == {"": 0.05} and base["inference_kind"] == {"": "wall"}
    assert base["inference_source"].startswith("eval_results.json (wall time")
    assert method["inference_source"] == "log.txt (pure compute)"
    assert method["inference_s_per_image"] == {"": 0.0625}
    assert long["inference_s_per_image"] == {"": 0.1, "tta": 0.8}
    assert list(long["results"]) == ["", "TTA"] and long["results"]["TTA"]["bbox"]["AP"] == 21.0
    assert base["config"]["lr_sched"] == "200 it × 2 img"
    assert base["config"]["lr_steps"] == (160,)  # cpu_schedule: x0.1 at 80 %, after the 100-it warmup
    assert base["config"]["model_family"] == method["config"]["model_family"] == "RetinaNet"
    assert base["config"]["stock_model"] and not method["config"]["stock_model"]
    assert math.isnan(base["results"][""]["bbox"]["APl"])
    assert [m["iteration"] for m in base["metrics"]] == [19, 39, 59, 79, 99, 200]


def test_grouping_and_table(runs):
    groups = run_reader.group_runs(runs)
    assert [[r["name"] for r in g["runs"]] for g in groups] == [["retinanet", "clean_anchors"], ["clean_anchors_long"]]
    assert groups[0]["baseline"]["name"] == "retinanet"  # the stock model
    assert groups[1]["baseline"] is None  # different schedule: not compared, no stock model

    header, rows = report.table_rows(groups[0]["runs"], groups[0]["baseline"])
    assert "mask AP" not in header  # no segm in this group
    col = {h: i for i, h in enumerate(header)}
    base, method, diff = rows
    timing = ("train time (s/iter)", "inference time (s/im)", "train mem (GB)")
    assert [base[col[c]] for c in timing] == ["0.625", "0.050*", "1.17"]  # *: wall time
    assert method[col["inference time (s/im)"]] == "0.062"  # log.txt's pure compute time: no *
    assert (method[col["train mem (GB)"]], method[col["box AP"]], method[col["APl"]]) == ("-", "12.50", "-")
    assert diff[0] == "Δ vs retinanet"
    assert diff[col["box AP"]] == "+2.50" and diff[col["AP50"]] == "\u22122.00" and diff[col["APl"]] == "-"

    header, rows = report.table_rows(runs)
    assert header[-1] == "mask AP"
    assert [r[0] for r in rows] == ["retinanet", "clean_anchors", "clean_anchors_long", "clean_anchors_long [TTA]"]
    assert [r[-1] for r in rows] == ["-", "-", "18.25", "-"]  # no Δ rows without a baseline
    assert rows[2][col["APl"]] == "30.00"
    assert (rows[2][col["inference time (s/im)"]], rows[3][col["inference time (s/im)"]]) == ("0.100*", "0.800*")
    assert rows[3][col["box AP"]] == "21.00"

    # --baseline picks the method run instead
    groups = run_reader.group_runs(runs, baseline="clean_anchors")
    assert groups[0]["baseline"]["name"] == "clean_anchors"
    table = report.markdown_table(*report.table_rows(groups[0]["runs"], groups[0]["baseline"]))
    assert table.splitlines()[-1].startswith("| Δ vs clean_anchors")


def test_schedule_names():
    assert run_reader.schedule_name(90000, 16) == "1x"
    assert run_reader.schedule_name(270000, 16) == "3x"
    assert run_reader.schedule_name(180000, 8) == "1x"
    assert run_reader.schedule_name(500, 4) == "500 it × 4 img"
    assert run_reader.schedule_name(None, 4) == "-"


def test_results_forms_and_bad_input(tmp_path):
    per_dataset = run_reader.normalize_results({"a_val": {"bbox": {"AP": 1.0}}, "b_val": {"bbox": {"AP": 2.0}}})
    assert list(per_dataset) == ["a_val", "b_val"]
    tta = run_reader.normalize_results({"bbox": {"AP": 1.0}, "bbox_TTA": {"AP": 2.0}})
    assert tta == {"": {"bbox": {"AP": 1.0}}, "TTA": {"bbox": {"AP": 2.0}}}
    with pytest.raises(run_reader.ReportError, match="not a train_net.py output folder"):
        run_reader.load_run(str(tmp_path))
    (tmp_path / "metrics.json").write_text('{"iteration": 0, "time": 1.0}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(run_reader.ReportError, match="metrics.json, line 2"):
        run_reader.load_run(str(tmp_path))
    assert _report_cli([str(tmp_path / "missing")]) == 2


def test_report_files(runs_root, tmp_path, capsys):
    out = str(tmp_path / "report")
    dirs = [os.path.join(runs_root, n) for n in ("retinanet", "clean_anchors", "clean_anchors_long")]
    assert _report_cli([*dirs, "--out", out, "--title", "Synthetic runs"]) == 0
    printed = capsys.readouterr().out
    assert "| retinanet " in printed and "Δ vs retinanet" in printed
    assert "no provenance.json: clean_anchors" in printed
    md = open(os.path.join(out, "report.md")).read()
    assert md.startswith("# Synthetic runs")
    assert "### clean_anchors\n" in md and "- no provenance.json" in md
    assert "`model._target_`: detkit.modeling.GlobalNormalizerRetinaNet → clean_anchors.CleanAnchorsRetinaNet" in md
    base_prov = json.load(open(os.path.join(runs_root, "retinanet", "provenance.json")))
    assert f"sha256 `{base_prov['config_sha256']}`" in md
    for png in ("training_curves.png", "loss_terms.png"):
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in md


def test_pure_compute_time_per_class_ap_method_stats_and_a_one_point_run(tmp_path, monkeypatch):
    root = str(tmp_path)
    per_class = {"AP-tree": 30.0, "AP-shrub": 10.5}
    stats = {"clean_anchors/soft_labels_mean": 0.7, "clean_anchors/weights_max": 3.0}
    # 20 iterations: one metrics.json line; wall, pure compute and log.txt times all present
    run = make_run(root, "short", CLEAN_ANCHORS, 20, [0.5], [1.0], {**bbox(10.0), **per_class}, inference=3.3,
                   compute=0.41, log_inference=0.5, extra_metrics=stats)
    loaded = run_reader.load_run(run)
    assert loaded["inference_s_per_image"] == {"": 0.41} and loaded["inference_kind"] == {"": "compute"}
    assert loaded["inference_source"] == "eval_results.json (pure compute)"
    assert loaded["config"]["lr_steps"] == (16,)  # the warmup ends before the step, which the schedule now has
    assert "steps at 16" in run_reader.describe_group(loaded)
    assert [c.strip() for c in report.per_class_table([loaded]).splitlines()[0].split("|")[1:4]] == [
        "name", "tree", "shrub"]
    assert report.per_class_table(run_reader.load_runs([os.path.join(root, "short")])[:0]) is None

    import matplotlib.axes

    plotted = []  # (number of points, marker) of each curve drawn
    real_plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda ax, x, y, *a, **k: plotted.append((len(x), k.get("marker"))) or real_plot(ax, x, y, *a, **k))
    out = str(tmp_path / "report")
    md, text = report.build_report([run], out)
    # one point each (total_loss raw and smoothed, lr, 2 loss terms, 2 statistics); bold ones with a marker
    assert len(plotted) == 7 and all(n == 1 for n, _ in plotted)
    assert [m for _, m in plotted].count("o") == 6  # all but the faint raw total_loss
    assert "| short " in md and " 0.410 " in md and "3.300" not in md
    assert "## Per-class box AP" in md and "| 30.00 | 10.50 |" in md
    assert "![method_stats](method_stats.png)" in md and os.path.isfile(os.path.join(out, "method_stats.png"))


def test_provenance_record(runs_root):
    path = os.path.join(runs_root, "retinanet", "provenance.json")
    p = json.load(open(path))
    config = os.path.join(REPO_ROOT, RETINANET)
    assert p["config_file"] == config
    assert p["config_sha256"] == hashlib.sha256(open(config, "rb").read()).hexdigest()
    yaml_path = os.path.join(runs_root, "retinanet", "config.yaml")
    assert p["config_yaml_sha256"] == hashlib.sha256(open(yaml_path, "rb").read()).hexdigest()
    assert p["overrides"][0] == "train.max_iter=200"
    assert p["seed"] == 0 and p["world_size"] == 1 and p["mode"] == "train"
    assert set(p["versions"]) >= {"python", "torch", "torchvision", "detectron2"}
    assert p["versions"]["torch"] and p["versions"]["detectron2"]
    assert p["device"]["name"] == "cpu" and p["device"]["num_threads"] >= 1
    assert p["hostname"] and p["start_time_utc"].endswith("+00:00")
    assert p["command"]
    if os.path.isdir(os.path.join(REPO_ROOT, ".git")):
        assert len(p["git"]["commit"]) == 40 and isinstance(p["git"]["dirty"], bool)


def test_provenance_resume_and_eval_only(tmp_path):
    cfg = load_synthetic_cfg("retinanet_mnv2_fpn.py")
    out = str(tmp_path)
    write_provenance(cfg, _args(RETINANET), out, device="cpu")
    first = json.load(open(tmp_path / "provenance.json"))
    write_provenance(cfg, _args(RETINANET, "train.max_iter=7", flags=["--resume"]), out, device="cpu")
    resumed = json.load(open(tmp_path / "provenance.json"))
    assert resumed["overrides"] == first["overrides"] == []  # the original start is kept
    assert [r["overrides"] for r in resumed["resumes"]] == [["train.max_iter=7"]]
    write_provenance(cfg, _args(RETINANET, flags=["--eval-only"]), out, device="cpu")
    assert json.load(open(tmp_path / "provenance.json")) == resumed  # not overwritten
    assert json.load(open(tmp_path / "provenance_eval.json"))["mode"] == "eval-only"


def test_git_state_without_git(tmp_path, monkeypatch):
    assert git_state(str(tmp_path)) == {"commit": None, "dirty": None, "changed_files": None}  # not a repository
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable
    assert collect_provenance(load_synthetic_cfg("retinanet_mnv2_fpn.py"), _args(RETINANET))["git"]["commit"] is None


_PEAK_SCRIPT = """
import json, types, numpy as np
from detectron2.utils.events import EventStorage
from detkit.engine import PeakMemory
hook = PeakMemory("cpu")
values = []
with EventStorage(3) as storage:
    hook.trainer = types.SimpleNamespace(storage=storage)
    hook.after_step()
    values.append(storage.latest()["peak_mem_mb"])
    # more than the whole process has ever held (imports included): the peak must rise
    size_mb = int(values[0][0]) + 300
    buf = np.ones(size_mb * 2**20 // 8)
    hook.after_step()
    values.append(storage.latest()["peak_mem_mb"])
    del buf
    hook.after_step()
    values.append(storage.latest()["peak_mem_mb"])
    print(json.dumps({"values": values, "size_mb": size_mb, "hint": storage.smoothing_hints()["peak_mem_mb"]}))
"""


def test_peak_memory_hook_puts_rss():
    """In a fresh process (the RSS high-water mark of this one is unknown): an array larger than the
    peak so far raises the logged peak above the old peak by at least 300 MB minus what was freed
    since, at most by its size; freeing it does not lower the logged peak."""
    import subprocess

    r = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    values, hint = out["values"], out["hint"]
    (v1, i1), (v2, i2), (v3, i3) = values
    assert i1 == i2 == i3 == 3
    assert 50.0 < v1 and v1 + 250.0 < v2 < v1 + out["size_mb"] + 100.0 and v3 == v2
    assert hint is False