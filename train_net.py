#!/usr/bin/env python
"""Train or evaluate a detector described by a LazyConfig (.py) file.

    python train_net.py --config-file configs/TreeCrowns/retinanet_mnv2_fpn.py
    python train_net.py --config-file configs/COCO-Detection/retinanet_R_50_FPN_1x.py --num-gpus 8
    python train_net.py --config-file CFG --eval-only train.init_checkpoint=output/x/model_final.pth
    python train_net.py --config-file CFG --resume           # continue from output_dir's last checkpoint
    python train_net.py --config-file CFG train.max_iter=20 dataloader.train.total_batch_size=2

Detectron2's tools/lazyconfig_train_net.py, plus: it runs on the CPU when there is no GPU (also
with --num-gpus N > 1: N processes with GLOO + DDP), it refuses overrides of keys that do not exist
(prefix a new key with "+"), it clips the gradient norm when `train.clip_grad.enabled`, and it
writes the last evaluation to OUTPUT_DIR/eval_results.json.
"""
import logging
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

import detkit  # noqa: F401  (registers the built-in datasets)
from detkit.engine import (
    add_gradient_clipping,
    apply_overrides_strict,
    save_eval_results,
    select_device,
)

logger = logging.getLogger("detectron2")


def do_test(cfg, model, iterations_trained=None):
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process():
        print_csv_format(results)
        path = save_eval_results(results, cfg.train.output_dir, iterations_trained)
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
    clip = cfg.train.get("clip_grad", None)
    if clip is not None and clip.get("enabled", False):
        add_gradient_clipping(optim, clip.max_norm, clip.get("norm_type", 2.0))
    train_loader = instantiate(cfg.dataloader.train)

    model = build_ddp_model(cfg, model, device)
    use_amp = cfg.train.amp.enabled and device.startswith("cuda")
    if cfg.train.amp.enabled and not use_amp:
        logger.warning("train.amp.enabled=True needs a CUDA GPU: training in fp32 on the CPU.")
    trainer = (AMPTrainer if use_amp else SimpleTrainer)(model, train_loader, optim)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
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


def main(args):
    cfg = LazyConfig.load(args.config_file)
    cfg = apply_overrides_strict(cfg, args.opts)
    default_setup(cfg, args)
    device = select_device(cfg.train.get("device", "cuda"))
    cfg.train.device = device

    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(device)
        model = build_ddp_model(cfg, model, device)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(args, cfg, device)


def invoke_main() -> None:
    args = default_argument_parser(epilog=__doc__).parse_args()
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
