"""detkit.study / tools/study.py: the statistics on hand-made numbers, the pairing refusal, and a
2-config x 2-seed synthetic study end to end with --jobs 2, killed in the middle and resumed."""
import contextlib
import json
import math
import os
import runpy
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest

from conftest import REPO_ROOT
from detkit.study import StudyError, check_pairing, compare, stats
from detkit.study.runner import check_plan, plan_runs, run_state


# --- statistics


def test_t_quantile_matches_tables():
    # Student t 97.5 % quantiles (any statistics table)
    for df, value in [(1, 12.706204736), (2, 4.302652730), (3, 3.182446305), (4, 2.776445105),
                      (10, 2.228138852), (30, 2.042272456)]:
        assert stats.t_quantile(0.975, df) == pytest.approx(value, abs=1e-8)
    assert stats.t_quantile(0.025, 3) == pytest.approx(-3.182446305, abs=1e-8)
    assert stats.t_quantile(0.5, 5) == pytest.approx(0.0, abs=1e-9)


def test_summary_and_t_interval_by_hand():
    s = stats.summary([1.0, 2.0, 3.0, 4.0, float("nan")])  # NaN (no detections) is left out
    assert s["n"] == 4 and s["mean"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0
    assert s["std"] == pytest.approx(math.sqrt(5 / 3))  # sample std: sum of squares 5 over n - 1 = 3
    lo, hi = stats.t_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305 * math.sqrt(5 / 3) / 2  # t(0.975, 3) * s / sqrt(n)
    assert lo == pytest.approx(2.5 - half, abs=1e-7) and hi == pytest.approx(2.5 + half, abs=1e-7)
    assert all(math.isnan(x) for x in stats.t_interval([1.0]))
    assert stats.summary([5.0])["n"] == 1 and math.isnan(stats.summary([5.0])["std"])


def test_bootstrap_reproducible_with_its_seed():
    diffs = [0.31, -1.2, 2.03, 0.7, -0.45, 1.18, 0.05, 0.92]
    a = stats.bootstrap_interval(diffs, seed=7, resamples=500)
    assert stats.bootstrap_interval(diffs, seed=7, resamples=500) == a
    assert stats.bootstrap_interval(diffs, seed=8, resamples=500) != a
    assert min(diffs) <= a[0] < a[1] <= max(diffs)
    # two values: the resampled means are the two values and their mean, nothing beyond
    lo, hi = stats.bootstrap_interval([0.0, 1.0], resamples=2000)
    assert lo == 0.0 and hi == 1.0


def test_verdicts_and_pairing_by_seed():
    assert stats.verdict((0.1, 0.5)) == "better"
    assert stats.verdict((-0.5, -0.1)) == "worse"
    assert stats.verdict((-0.1, 0.2)) == "within noise"
    assert stats.verdict((0.0, 0.2)) == "within noise"
    assert stats.verdict((float("nan"), float("nan"))) == "within noise"
    # only the seeds both configs have, differences other - baseline
    assert stats.paired_differences({0: 1.0, 1: 2.0, 2: 3.0}, {1: 2.5, 2: 2.0, 3: 9.0}) == {1: 0.5, 2: -1.0}
    # a consistent +1 with small spread: better; the same mean with a seed flipping sign: within noise
    c = compare({0: 10.0, 1: 12.0, 2: 11.0, 3: 9.0}, {0: 11.1, 1: 12.9, 2: 12.0, 3: 10.0})
    assert c["seeds"] == [0, 1, 2, 3] and c["mean"] == pytest.approx(1.0) and c["verdict"] == "better"
    c = compare({0: 10.0, 1: 12.0, 2: 11.0, 3: 9.0}, {0: 13.0, 1: 11.0, 2: 13.0, 3: 9.0})
    assert c["mean"] == pytest.approx(1.0) and c["verdict"] == "within noise"
    c = compare({0: 10.0, 1: 12.0, 2: 11.0}, {0: 9.0, 1: 11.2, 2: 9.9})
    assert c["verdict"] == "worse"


# --- pairing


def _fake_run(seed, max_iter=500, lr=0.01, family="RetinaNet", commit="abc", threads=1):
    config = {"train_datasets": ("treecrowns_train",), "test_datasets": ("treecrowns_val",), "max_iter": max_iter,
              "batch_size": 4, "base_lr": lr, "lr_steps": (400,), "backbone": ("mnv2",), "model_family": family,
              "seed": seed}
    return {"dir": f"/runs/{seed}", "config": config, "results": {}, "iterations_trained": max_iter,
            "provenance": {"git": {"commit": commit}, "device": {"num_threads": threads}}}


def test_pairing_refuses_runs_that_differ_in_more_than_the_method():
    runs = {"base": {0: _fake_run(0), 1: _fake_run(1)}, "method": {0: _fake_run(0), 1: _fake_run(1)}}
    assert check_pairing(runs, "base") == []
    runs["method"][1] = _fake_run(1, max_iter=1000)
    with pytest.raises(StudyError, match=r"method seed 1 .*schedule \(train.max_iter\): 500 → 1000"):
        check_pairing(runs, "base")
    runs["method"][1] = _fake_run(1, lr=0.02)
    with pytest.raises(StudyError, match=r"base lr \(optimizer.lr\): 0.01 → 0.02"):
        check_pairing(runs, "base")
    runs["method"][1] = _fake_run(1, family="GeneralizedRCNN")
    with pytest.raises(StudyError, match="meta-architecture"):
        check_pairing(runs, "base")
    wrong_seed = _fake_run(0)
    runs["method"][1] = wrong_seed  # the folder says seed 1, its config.yaml seed 0
    with pytest.raises(StudyError, match="train.seed=0"):
        check_pairing(runs, "base")
    # commit and threads may differ: said, not refused
    runs["method"][1] = _fake_run(1, commit="def", threads=2)
    notes = check_pairing(runs, "base")
    assert any("2 commits" in n for n in notes) and any("thread counts [1, 2]" in n for n in notes)


def test_plan_and_settings_checks(tmp_path):
    base = os.path.join(REPO_ROOT, "configs/Synthetic/retinanet_mnv2_fpn.py")
    method = os.path.join(REPO_ROOT, "configs/Synthetic/clean_anchors_retinanet_mnv2_fpn.py")
    specs = plan_runs([base, method], [0, 1], str(tmp_path))
    assert [(s.name, s.seed) for s in specs] == [("retinanet_mnv2_fpn", 0), ("clean_anchors_retinanet_mnv2_fpn", 0),
                                                 ("retinanet_mnv2_fpn", 1), ("clean_anchors_retinanet_mnv2_fpn", 1)]
    assert specs[3].output_dir == os.path.join(str(tmp_path), "clean_anchors_retinanet_mnv2_fpn", "seed1")
    assert run_state(specs[0]) == "new"
    with pytest.raises(StudyError, match="does not exist"):
        plan_runs([base, "configs/nope.py"], [0], str(tmp_path))
    with pytest.raises(StudyError, match="repeat a seed"):
        plan_runs([base], [0, 0], str(tmp_path))
    check_plan(str(tmp_path), ["train.max_iter=3"], 1)
    check_plan(str(tmp_path), ["train.max_iter=3"], 1)  # the same settings: fine
    with pytest.raises(StudyError, match="overrides"):
        check_plan(str(tmp_path), ["train.max_iter=4"], 1)
    with pytest.raises(StudyError, match="threads"):
        check_plan(str(tmp_path), ["train.max_iter=3"], 2)


# --- end to end

CONFIGS = ["configs/Synthetic/retinanet_mnv2_fpn.py", "configs/Synthetic/clean_anchors_retinanet_mnv2_fpn.py"]
FAST = ["train.max_iter=6", "train.checkpointer.period=2", "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0", "dataloader.test.num_workers=0", "train.log_period=1"]


def _study_cmd(out):
    return [sys.executable, os.path.join(REPO_ROOT, "tools", "study.py"), "--baseline", CONFIGS[0],
            "--config", CONFIGS[1], "--seeds", "0", "1", "--output-dir", str(out), "--jobs", "2", "--threads", "1",
            *FAST]


def _study_main(argv):
    """tools/study.py in this process, as if run with ``argv`` (the study records sys.argv)."""
    path = os.path.join(REPO_ROOT, "tools", "study.py")  # by path: the Detectron2 wheel has a "tools" package
    with mock.patch.object(sys, "argv", [path, *argv]), contextlib.chdir(REPO_ROOT):
        return runpy.run_path(path)["main"](argv)


def _run_dirs(out):
    return [os.path.join(out, os.path.splitext(os.path.basename(c))[0], f"seed{s}") for s in (0, 1) for c in CONFIGS]


@pytest.mark.slow
def test_study_end_to_end_killed_and_resumed(tmp_path, capfd):
    out = tmp_path / "study"
    proc = subprocess.Popen(_study_cmd(out), cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # kill the whole study (both running jobs) once a run has a checkpoint but no evaluation yet
    deadline, interrupted = time.time() + 240, None
    while time.time() < deadline and interrupted is None and proc.poll() is None:
        for d in _run_dirs(out):
            if os.path.isfile(os.path.join(d, "last_checkpoint")) and not os.path.isfile(os.path.join(d, "eval_results.json")):
                interrupted = d
                break
        time.sleep(0.2)
    assert interrupted is not None, "no run was caught between a checkpoint and its end"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {d: open(os.path.join(d, "eval_results.json")).read()
                       for d in _run_dirs(out) if os.path.isfile(os.path.join(d, "eval_results.json"))}

    capfd.readouterr()
    code, err = _study_main(_study_cmd(out)[2:]), capfd.readouterr().err
    assert code == 0, err[-3000:]
    assert "continues" in err  # the interrupted run resumed from its checkpoint
    for d in _run_dirs(out):
        saved = json.load(open(os.path.join(d, "eval_results.json")))
        assert saved["iterations_trained"] == 6
        assert "AP40" in saved["results"]["bbox"] and "R40" in saved["results"]["bbox"]
    for d, text in finished_before.items():  # a finished run is skipped: its numbers unchanged
        assert open(os.path.join(d, "eval_results.json")).read() == text
    assert json.load(open(os.path.join(interrupted, "provenance.json")))["resumes"], "the run was not resumed"

    study = json.load(open(out / "study.json"))
    assert study["baseline"] == "retinanet_mnv2_fpn" and study["jobs"] == 2 and study["threads"] == 1
    assert list(study["configs"]) == ["retinanet_mnv2_fpn", "clean_anchors_retinanet_mnv2_fpn"]
    assert study["configs"]["retinanet_mnv2_fpn"]["seeds"] == [0, 1]
    comp = study["comparisons"]["clean_anchors_retinanet_mnv2_fpn"]["AP40"]
    assert comp["seeds"] == [0, 1] and comp["verdict"] in stats.VERDICTS
    md = (out / "study.md").read_text()
    assert "clean_anchors_retinanet_mnv2_fpn − retinanet_mnv2_fpn (paired by seed)" in md
    assert os.path.getsize(out / "study.png") > 0

    # a third call finds everything finished: nothing trains (the CLI in this process: no start-up)
    capfd.readouterr()
    assert _study_main(_study_cmd(out)[2:]) == 0 and "4 run(s) already finished" in capfd.readouterr().err

    # --report-only --report-dir: the same report elsewhere, keeping the study's own command
    pub = tmp_path / "published"
    argv = _study_cmd(out)[2:]
    argv[:0] = ["--report-only", "--report-dir", str(pub)]  # before the key=value opts
    assert _study_main(argv) == 0, capfd.readouterr().err[-2000:]
    published = json.load(open(pub / "study.json"))
    assert published["command"] == study["command"] and "--report-only" in published["report_command"]
    assert published["comparisons"] == study["comparisons"] and os.path.isfile(pub / "study.png")


@pytest.mark.slow
def test_failed_run_is_reported_and_the_others_finish(tmp_path, capfd):
    out = tmp_path / "study"
    # seed 1 of the baseline cannot resume: its last checkpoint is not a checkpoint
    bad = out / "retinanet_mnv2_fpn" / "seed1"
    bad.mkdir(parents=True)
    (bad / "model_0000001.pth").write_bytes(b"not a checkpoint")
    (bad / "last_checkpoint").write_text("model_0000001.pth")
    assert _study_main(_study_cmd(out)[2:]) == 1
    err = capfd.readouterr().err
    assert "FAILED retinanet_mnv2_fpn seed 1" in err and "model_0000001.pth" in err  # the log's tail
    assert "1 run(s) failed: retinanet_mnv2_fpn seed 1" in err
    for d in _run_dirs(out):
        if d != str(bad):
            assert json.load(open(os.path.join(d, "eval_results.json")))["iterations_trained"] == 6
    # the report of the others is written, the unpaired seed left out of the comparison
    study = json.load(open(out / "study.json"))
    assert study["configs"]["retinanet_mnv2_fpn"]["seeds"] == [0]
    assert study["comparisons"]["clean_anchors_retinanet_mnv2_fpn"]["AP40"]["seeds"] == [0]
    assert any("retinanet_mnv2_fpn seed 1" in n for n in study["notes"])


def test_refuses_a_folder_in_which_an_earlier_run_still_trains(tmp_path):
    """A study killed alone leaves its train_net.py runs going: a re-run must not start a second
    process in the same folder."""
    from detkit.study.runner import PID_FILE, run_study

    spec = plan_runs([os.path.join(REPO_ROOT, CONFIGS[0])], [0], str(tmp_path))[0]
    os.makedirs(spec.output_dir)
    # a stand-in process whose command line looks like the run's train_net.py
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "train_net.py", spec.output_dir])
    try:
        deadline = time.time() + 30  # until the child has exec'd (its command line is no longer ours)
        while time.time() < deadline and b"train_net.py" not in open(f"/proc/{proc.pid}/cmdline", "rb").read():
            time.sleep(0.05)
        with open(os.path.join(spec.output_dir, PID_FILE), "w") as f:
            f.write(str(proc.pid))
        with pytest.raises(StudyError, match=rf"pid {proc.pid}\) still trains in"):
            run_study([spec], [], str(tmp_path), jobs=1, threads=1)
    finally:
        proc.kill()
        proc.wait()
