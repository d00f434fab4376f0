"""Your own data (README "Your own data"): the configs/Examples set on a generated COCO json + image
folder, trained and evaluated through train_net.py; register_coco_dataset(replace=True)."""
import json
import math
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser

import train_net
from conftest import REPO_ROOT
from detkit.data import DatasetError, register_coco_dataset
from detkit.data.synthetic import prepare_synthetic

SMALL = [  # a CPU test: 2 images per step, 96 px short side, no worker processes
    "train.max_iter=2",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "dataloader.train.mapper.augmentations.0.short_edge_length=[96]",
    "dataloader.test.mapper.augmentations.0.short_edge_length=96",
    "model.test_score_thresh=0.0",  # 2 iterations: keep every detection, so that AP is a number
    "train.log_period=1",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def my_data(tmp_path, monkeypatch):
    """datasets/my_data as the README lays it out (annotations/{train,val}.json, train/, val/), 3
    classes, under a $DETECTRON2_DATASETS of its own."""
    data = tmp_path / "datasets" / "my_data"
    (data / "annotations").mkdir(parents=True)
    for split, num, seed in (("train", 4, 0), ("val", 2, 1)):
        generated = tmp_path / f"generated_{split}"
        prepare_synthetic(str(generated), num_images=num, image_size=(96, 128), seed=seed, max_objects=4)
        os.rename(generated / "images", data / split)
        os.rename(generated / "coco.json", data / "annotations" / f"{split}.json")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    return data


def run(config, output_dir, *opts, flags=()):
    args = default_argument_parser().parse_args(
        ["--config-file", os.path.join(REPO_ROOT, "configs/Examples", config), *flags,
         f"train.output_dir={output_dir}", *SMALL, *opts]
    )
    return train_net.main(args)


def _losses(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [m for m in map(json.loads, f) if "total_loss" in m]


def test_example_configs_train_and_evaluate_on_your_own_data(my_data, tmp_path):
    out = {name: str(tmp_path / name) for name in ("base", "clean", "swn", "eval")}
    run("retinanet_mnv2_fpn.py", out["base"])
    assert MetadataCatalog.get("my_data_train").json_file == str(my_data / "annotations" / "train.json")
    assert MetadataCatalog.get("my_data_val").thing_classes == ["blob", "stick", "ring"]
    run("clean_anchors_retinanet_mnv2_fpn.py", out["clean"], "model.cleanliness.gamma=2.0")
    run("swn_retinanet_mnv2_fpn.py", out["swn"])

    for name, key in (("base", "loss_cls"), ("clean", "clean_anchors/soft_labels_max"), ("swn", "loss_swn_reg")):
        steps = _losses(out[name])
        assert [m["iteration"] for m in steps] == [0, 1], name
        assert all(math.isfinite(m["total_loss"]) and key in m for m in steps), name
        results = json.load(open(os.path.join(out[name], "eval_results.json")))
        assert results["iterations_trained"] == 2
        assert math.isfinite(results["results"]["bbox"]["AP50"]), name
    with open(os.path.join(out["clean"], "config.yaml")) as f:
        assert "gamma: 2.0" in f.read()  # the override reached the CleanAnchors model

    # --eval-only of the trained baseline gives the numbers of its end-of-training evaluation
    results = run("retinanet_mnv2_fpn.py", out["eval"], f"train.init_checkpoint={out['base']}/model_final.pth",
                  flags=["--eval-only"])
    trained = json.load(open(os.path.join(out["base"], "eval_results.json")))["results"]["bbox"]
    assert results["bbox"]["AP"] == pytest.approx(trained["AP"], nan_ok=True)
    assert os.path.isfile(os.path.join(out["eval"], "inference", "coco_instances_results.json"))

    # a class count that does not fit the json is refused, naming the key
    with pytest.raises(ValueError, match=r"has 3 classes .* Set model.num_classes=3"):
        run("retinanet_mnv2_fpn.py", str(tmp_path / "bad"), "model.num_classes=2")


def test_register_coco_dataset_replace_for_config_files(tmp_path):
    name = "test_own_data_replace"
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    try:
        register_coco_dataset(name, first, tmp_path, replace=True)
        MetadataCatalog.get(name).set(thing_classes=["x"])  # what loading the json sets
        register_coco_dataset(name, first, tmp_path, replace=True)  # the same config loaded again: kept
        assert MetadataCatalog.get(name).thing_classes == ["x"]
        register_coco_dataset(name, second, tmp_path, replace=True)  # other paths: replaced
        assert MetadataCatalog.get(name).json_file == str(second)
        assert MetadataCatalog.get(name).get("thing_classes", None) is None
        with pytest.raises(DatasetError, match=rf"dataset '{name}' is already registered: .* pass replace=True"):
            register_coco_dataset(name, first, tmp_path)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    with pytest.raises(DatasetError, match="'synthetic_val' is already registered \\(a built-in dataset"):
        register_coco_dataset("synthetic_val", first, tmp_path, replace=True)
