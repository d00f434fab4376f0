#!/usr/bin/env python
"""Train or evaluate a detector described by a LazyConfig (.py) file.

    python train_net.py --config-file configs/TreeCrowns/retinanet_mnv2_fpn.py
    python train_net.py --config-file configs/COCO-Detection/retinanet_R_50_FPN_1x.py --num-gpus 8
    python train_net.py --config-file CFG --eval-only train.init_checkpoint=output/x/model_final.pth
    python train_net.py --config-file CFG --eval-only train.init_checkpoint=... test.aug.enabled=True test.soft_nms.enabled=True
    python train_net.py --config-file CFG --resume           # continue from output_dir's last checkpoint
    python train_net.py --config-file CFG train.max_iter=20 dataloader.train.total_batch_size=2

Detectron2's tools/lazyconfig_train_net.py, plus: it runs on the CPU when there is no GPU (also
with --num-gpus N > 1: N processes with GLOO + DDP), it refuses overrides of keys that do not exist
(prefix a new key with "+"), it clips the gradient norm when `train.clip_grad.enabled`, and it
writes the last evaluation to OUTPUT_DIR/eval_results.json. Every config gets a `test` node
(detkit.engine.TEST_DEFAULTS): `test.aug.*` adds a multi-scale/flip test-time-augmented evaluation
("bbox_TTA") after training and with --eval-only, `test.soft_nms.*` evaluates with Soft-NMS.
Checkpoints are written atomically and loaded with weights_only (--allow-unsafe-checkpoint for
files that need full unpickling); --resume continues exactly (RNG states, data stream); a
non-finite loss stops training naming the loss terms and images; OUTPUT_DIR/provenance.json records
the config hash, command, git commit, versions and device (see README.md). A missing or unloadable
config, a wrong override (unknown key, wrong type), a bad training setting or missing dataset files
(COCO / VOC without $DETECTRON2_DATASETS) end it with one line on stderr (exit code 2) before
anything is built. The environment dump, the config file's contents and the model print-out go to
OUTPUT_DIR/log.txt only, unless --verbose.
"""
import logging
import os
import sys
from contextlib import nullcontext

from detectron2.config import instantiate
from detectron2.engine import (
    default_argument_parser,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import print_csv_format
from detectron2.utils import comm
from omegaconf import OmegaConf

import detkit  # noqa: F401  (registers the built-in datasets)
from detkit.data.validation import check_model_classes
from detkit.engine import (
    TEST_DEFAULTS,
    CheckedAMPTrainer,
    CheckedSimpleTrainer,
    ConfigError,
    SafeCheckpointer,
    PeakMemory,
    add_gradient_clipping,
    leave_process_group_on_exit,
    load_checked_config,
    quiet_default_setup,
    save_eval_results,
    select_device,
    write_provenance,
)
from detkit.evaluation.timing import inference_times_on_dataset
from detkit.modeling.nms_inference import soft_nms_inference
from detkit.modeling.soft_nms import soft_nms_options
from detkit.modeling.tta import build_tta_model
from swn import check_swn_optimizer

logger = logging.getLogger("detectron2")


def do_test(cfg, model, iterations_trained=None):
    """Evaluate ``model`` on ``cfg.dataloader.test``: with Soft-NMS instead of the model's NMS when
    ``test.soft_nms.enabled``; after the last iteration (or with --eval-only) also with test-time
    augmentation when ``test.aug.enabled``, reported as "<task>_TTA" (Detectron2's naming) with
    the evaluator's files in OUTPUT_DIR/inference_TTA. eval_results.json gets the inference times
    per image: the loop's wall time ("inference_s_per_image", "inference_s_per_image_tta") and
    Detectron2's pure compute time ("inference_compute_s_per_image", "..._tta")."""
    if "evaluator" not in cfg.dataloader:
        return {}
    test = OmegaConf.merge(OmegaConf.create(TEST_DEFAULTS), cfg.get("test") or {})
    soft_nms = soft_nms_options(test.soft_nms)
    with soft_nms_inference(model, **soft_nms) if soft_nms else nullcontext():
        results, times = inference_times_on_dataset(
            model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
        )
    timing = {"inference_s_per_image": times["wall"], "inference_compute_s_per_image": times["compute"]}
    if test.aug.enabled and (iterations_trained is None or iterations_trained >= cfg.train.max_iter):
        evaluator = OmegaConf.to_container(cfg.dataloader.evaluator, resolve=True)
        if "output_dir" in evaluator:
            evaluator["output_dir"] = os.path.join(cfg.train.output_dir, "inference_TTA")
        tta_results, times = inference_times_on_dataset(
            build_tta_model(model, test), instantiate(cfg.dataloader.test), instantiate(evaluator)
        )
        timing.update(inference_s_per_image_tta=times["wall"], inference_compute_s_per_image_tta=times["compute"])
        results.update({f"{task}_TTA": metrics for task, metrics in tta_results.items()})
    if comm.is_main_process():
        print_csv_format(results)
        times = ", ".join(f"{k} {v:.4f} s" for k, v in timing.items() if v is not None)
        logger.info(f"Inference time per image (wall, pure compute): {times}")
        path = save_eval_results(results, cfg.train.output_dir, iterations_trained, extra=timing)
        logger.info(f"Evaluation results written to {path}")
    return results


def build_ddp_model(cfg, model, device):
    ddp_kwargs = dict(cfg.train.ddp)
    if device == "cpu":
        ddp_kwargs["device_ids"] = None  # Detectron2 passes [local_rank], which DDP rejects on CPU
    return create_ddp_model(model, **ddp_kwargs)


def do_train(args, cfg, device):
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(device)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    check_swn_optimizer(model, optim)  # an SWN model needs its SWN under Adam (swn.make_swn)
    clip = cfg.train.get("clip_grad", None)
    if clip is not None and clip.get("enabled", False):
        add_gradient_clipping(optim, clip.max_norm, clip.get("norm_type", 2.0))
    train_loader = instantiate(cfg.dataloader.train)
    check_model_classes(model, cfg.dataloader.train.get("dataset", {}).get("names"))

    model = build_ddp_model(cfg, model, device)
    use_amp = cfg.train.amp.enabled and device.startswith("cuda")
    if cfg.train.amp.enabled and not use_amp:
        logger.warning("train.amp.enabled=True needs a CUDA GPU: training in fp32 on the CPU.")
    # Detectron2's trainers plus a finite-loss check before backward and exact resume;
    # atomic checkpoints, weights-only loading, clear architecture-mismatch errors
    trainer = (CheckedAMPTrainer if use_amp else CheckedSimpleTrainer)(
        model, train_loader, optim, checkpoint_dir=cfg.train.output_dir
    )
    checkpointer = SafeCheckpointer(
        model, cfg.train.output_dir, allow_unsafe=getattr(args, "allow_unsafe_checkpoint", False),
        **trainer.checkpointables(),
    )
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            PeakMemory(device),  # peak_mem_mb in metrics.json, before PeriodicWriter
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model, min(trainer.iter + 1, trainer.max_iter))),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def load_config(args):
    """The config with the test node, the strict overrides and every check that needs nothing built
    (detkit.engine.load_checked_config; raises ConfigError, one line)."""
    return load_checked_config(args.config_file, args.opts, train=not args.eval_only)


def main(args):
    with leave_process_group_on_exit():  # launch's GLOO workers otherwise can SIGABRT at exit
        return _main(args)


def _main(args):
    cfg = load_config(args)  # before anything is built or written
    # default_setup; its environment dump and config file contents to log.txt only unless --verbose
    quiet_default_setup(cfg, args, verbose=getattr(args, "verbose", False))
    device = select_device(cfg.train.get("device", "cuda"))
    cfg.train.device = device
    write_provenance(cfg, args, cfg.train.output_dir)  # provenance(_eval).json, main process only

    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(device)
        model = build_ddp_model(cfg, model, device)
        SafeCheckpointer(
            model, require_complete=True, allow_unsafe=getattr(args, "allow_unsafe_checkpoint", False)
        ).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(args, cfg, device)


def invoke_main(argv=None) -> None:
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument(
        "--allow-unsafe-checkpoint",
        action="store_true",
        help="load checkpoints that need full unpickling (arbitrary Python objects, which can run "
        "code); without it such files are refused. Only for files you trust.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also print the environment dump, the config file's contents and the model to the "
        "console (they are always in OUTPUT_DIR/log.txt)",
    )
    args = parser.parse_args(argv)
    try:
        load_config(args)  # the same checks main() repeats in each process: fail here in one line
    except ConfigError as e:
        print(f"train_net.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()  # pragma: no cover
