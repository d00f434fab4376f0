"""train_net.py's entry-point errors (one line on stderr, exit code 2, nothing built) and its quiet
console (environment dump and model print-out in log.txt only unless --verbose)."""
import os
import subprocess
import sys

import pytest
from detectron2.engine import default_argument_parser

import train_net
from conftest import REPO_ROOT
from detkit.engine import ConfigError, load_checked_config

SYNTHETIC = os.path.join(REPO_ROOT, "configs/Synthetic/retinanet_mnv2_fpn.py")


def _error_of(capsys, *argv):
    """Run train_net.invoke_main(argv); it must exit with code 2 and one stderr line. Returns it."""
    with pytest.raises(SystemExit) as exit_info:
        train_net.invoke_main(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train_net.py: error: "), err
    return err


def test_no_config_file(capsys):
    assert "no --config-file" in _error_of(capsys, "train.max_iter=1")


def test_missing_config_file(capsys, tmp_path):
    err = _error_of(capsys, "--config-file", str(tmp_path / "nope.py"))
    assert f"--config-file {tmp_path / 'nope.py'}: no such file" in err


def test_unloadable_config_file(capsys, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("model = (\n")
    assert "cannot be loaded (SyntaxError" in _error_of(capsys, "--config-file", str(bad))


@pytest.mark.parametrize("override, expected", [
    ("train.max_iter=ten", "train.max_iter must be a whole number (the config has 500), not 'ten'"),
    ("optimizer.lr=fast", "optimizer.lr must be a number"),
    ("test.aug.enabled=false", "test.aug.enabled must be True or False"),
    ("train.max_iter=0", "train.max_iter=0: the number of training iterations must be a whole number >= 1"),
    ("train.max_iters=3", "Did you mean train.max_iter,"),
])
def test_bad_override(capsys, tmp_path, monkeypatch, override, expected):
    # nothing may be built: fail loudly if the model or the data loader were instantiated
    monkeypatch.setattr(train_net, "instantiate", lambda *a, **k: pytest.fail("built something"))
    err = _error_of(capsys, "--config-file", SYNTHETIC, override, f"train.output_dir={tmp_path}")
    assert expected in err
    assert not os.listdir(tmp_path)  # nothing written either


def test_good_overrides_still_pass():
    cfg = load_checked_config(SYNTHETIC, ["train.max_iter=7", "optimizer.lr=1e-3", "test.aug.enabled=True",
                                          "model.test_score_thresh=0", "train.init_checkpoint=x.pth"])
    assert (cfg.train.max_iter, cfg.optimizer.lr, cfg.test.aug.enabled) == (7, 1e-3, True)


@pytest.mark.parametrize("config, eval_only, path", [
    ("configs/COCO-Detection/retinanet_R_50_FPN_1x.py", False, "coco/annotations/instances_train2017.json"),
    ("configs/COCO-Detection/retinanet_R_50_FPN_1x.py", True, "coco/annotations/instances_val2017.json"),
    ("configs/PascalVOC-Detection/retinanet_R_50_FPN.py", False, "VOC2007"),
])
def test_missing_dataset_files(capsys, config, eval_only, path):
    if os.path.exists(os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), path)):
        pytest.skip("this machine has the dataset")
    flags = ["--eval-only"] if eval_only else []
    err = _error_of(capsys, "--config-file", os.path.join(REPO_ROOT, config), *flags)
    assert path in err and "not found" in err and "set DETECTRON2_DATASETS to the folder that holds" in err


def test_unregistered_dataset():
    with pytest.raises(ConfigError, match="Dataset 'synthetic_trian' is not registered. Did you mean synthetic_train"):
        load_checked_config(SYNTHETIC, ["dataloader.train.dataset.names=synthetic_trian"])


def test_cli_error_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--config-file", SYNTHETIC,
                        "train.max_iter=ten", f"train.output_dir={tmp_path}"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # the last line (before it: only the import-time warnings of torch / pkg_resources, if any)
    assert [line for line in r.stderr.splitlines() if "error" in line] == [
        "train_net.py: error: Override 'train.max_iter=ten': train.max_iter must be a whole number (the config "
        "has 500), not 'ten'. Write e.g. train.max_iter=500."]


def test_environment_and_model_go_to_log_txt_only(capsys, tmp_path):
    out = str(tmp_path / "run")
    args = default_argument_parser().parse_args([
        "--config-file", SYNTHETIC, f"train.output_dir={out}", "train.max_iter=1", "model.backbone.pretrained=False",
        "dataloader.train.total_batch_size=1", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "train.eval_period=0"])
    train_net.main(args)
    console = capsys.readouterr().out
    with open(os.path.join(out, "log.txt")) as f:
        log = f.read()
    for text in ("Environment info:", "Contents of args.config_file=", "Model:\n"):
        assert text in log and text not in console
    assert "Starting training from iteration 0" in console and console.count("Starting training") == 1
    assert "--verbose also prints them here" in console


def test_verbose_prints_the_environment(capsys, tmp_path):
    from detkit.engine import quiet_default_setup

    cfg = load_checked_config(SYNTHETIC, [f"train.output_dir={tmp_path}"])
    args = default_argument_parser().parse_args(["--config-file", SYNTHETIC])
    quiet_default_setup(cfg, args, verbose=True)
    assert "Environment info:" in capsys.readouterr().out
