"""swn.optimizer: SGD (detector) + Adam (SWN) as one optimizer under Detectron2's LR schedule,
gradient clipping, GradScaler and checkpoint / resume."""
import io
import os
import itertools
import warnings

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import SimpleTrainer, hooks
from detectron2.engine.train_loop import HookBase
from detectron2.solver import LRMultiplier, WarmupParamScheduler, get_default_optimizer_params
from fvcore.common.param_scheduler import MultiStepParamScheduler
from torch import nn

from detkit.engine import add_gradient_clipping, apply_overrides_strict
from swn.optimizer import (
    CombinedOptimizer,
    build_swn_optimizer,
    build_swn_sgd,
    swn_optimizer_params,
)

MAX_ITER = 6


class Toy(nn.Module):
    """A detector-shaped toy: backbone (Linear + BatchNorm), head, and a weighting net `swn`."""

    def __init__(self, seed=0, with_swn=True):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
        self.head = nn.Linear(8, 1)
        if with_swn:
            self.swn = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1))

    def forward(self, batch):
        feat = self.backbone(batch["x"]).relu()
        err = (self.head(feat).squeeze(1) - batch["y"]) ** 2
        weight = torch.sigmoid(self.swn(feat.detach())).squeeze(1)
        return {"loss_det": (weight * err).mean(), "loss_reg": (weight.mean() - 0.5) ** 2}


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"x": torch.randn(16, 4, generator=g), "y": torch.randn(16, generator=g)}


def _build(model, lr=0.1):
    params = swn_optimizer_params(model, weight_decay_norm=0.0)
    return build_swn_sgd(params, lr=lr, momentum=0.9, weight_decay=1e-4)


def _multiplier():
    # warmup 0.1 -> 1 over the first 2 of 6 iterations, then x0.1 at 3 and x0.01 at 5
    return WarmupParamScheduler(
        MultiStepParamScheduler([1.0, 0.1, 0.01], milestones=[3, 5], num_updates=MAX_ITER),
        warmup_factor=0.1,
        warmup_length=2 / MAX_ITER,
    )


def _train_steps(model, opt, sched, n, batch):
    for _ in range(n):
        losses = sum(model(batch).values())
        opt.zero_grad()
        losses.backward()
        opt.step()
        sched.step()


def _ids(params):
    return [id(p) for p in params]


def _all_params(opt):
    return [p for g in opt.param_groups for p in g["params"]]


def _swn_ids(model):
    return set(_ids(model.swn.parameters()))


@pytest.mark.parametrize("how", ["lazy", "whole_model_sgd", "callable"])
def test_every_parameter_in_exactly_one_group(how):
    model = Toy()
    if how == "lazy":
        opt = _build(model)
    elif how == "whole_model_sgd":  # SWN params are taken out of an SGD over the whole model
        sgd = torch.optim.SGD(get_default_optimizer_params(model, weight_decay_norm=0.0), lr=0.1,
                              momentum=0.9, weight_decay=1e-4)
        opt = build_swn_optimizer(model, sgd)
    else:
        opt = build_swn_optimizer(
            model, lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=1e-4)
        )
    assert isinstance(opt, CombinedOptimizer) and isinstance(opt, torch.optim.Optimizer)
    assert sorted(_ids(_all_params(opt))) == sorted(_ids(model.parameters()))  # all, each once

    sgd, adam = opt["detector"], opt["swn"]
    assert type(sgd) is torch.optim.SGD and type(adam) is torch.optim.Adam
    assert [id(p) for g in adam.param_groups for p in g["params"]] == _ids(model.swn.parameters())
    assert all(g["lr"] == 1e-3 and g["weight_decay"] == 1e-4 for g in adam.param_groups)
    sgd_ids = {id(p) for g in sgd.param_groups for p in g["params"]}
    assert not sgd_ids & _swn_ids(model)
    assert all(g["lr"] == 0.1 and g["momentum"] == 0.9 for g in sgd.param_groups)
    if how != "callable":  # weight_decay_norm=0.0: BatchNorm's params without decay
        bn = set(_ids(model.backbone[1].parameters()))
        for g in sgd.param_groups:
            assert g["weight_decay"] == (0.0 if {id(p) for p in g["params"]} <= bn else 1e-4)

    # the union holds the children's own group dicts
    assert all(any(g is h for h in opt.param_groups) for g in sgd.param_groups + adam.param_groups)
    opt.param_groups[-1]["lr"] = 0.5
    assert adam.param_groups[-1]["lr"] == 0.5


LAZY_CONFIGS = {
    "explicit": """
from detectron2.config import LazyCall as L
from swn.optimizer import build_swn_sgd, swn_optimizer_params

optimizer = L(build_swn_sgd)(
    params=L(swn_optimizer_params)(model=None, swn_module="swn", weight_decay_norm=0.0),
    lr=0.01, momentum=0.9, weight_decay=1e-4, swn_lr=1e-3, swn_weight_decay=1e-4,
)
""",
    "from_detector_sgd": """
from detectron2.model_zoo import get_config
from swn.optimizer import build_swn_sgd, swn_optimizer_params

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.01
optimizer._target_ = build_swn_sgd
optimizer.params._target_ = swn_optimizer_params
optimizer.swn_lr = 1e-3
optimizer.swn_weight_decay = 1e-4
""",
}


@pytest.mark.parametrize("name", sorted(LAZY_CONFIGS))
def test_lazy_config_with_train_net_convention(tmp_path, name):
    path = tmp_path / "cfg.py"
    path.write_text(LAZY_CONFIGS[name])
    overrides = ["optimizer.lr=0.02", "optimizer.swn_lr=0.002"]
    cfg = apply_overrides_strict(LazyConfig.load(str(path)), overrides)
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))  # as default_setup does
    model = Toy()
    cfg.optimizer.params.model = model  # train_net.py, unchanged
    opt = instantiate(cfg.optimizer)
    assert isinstance(opt, CombinedOptimizer)
    assert {g["lr"] for g in opt["detector"].param_groups} == {0.02}
    assert [(g["lr"], g["weight_decay"]) for g in opt["swn"].param_groups] == [(0.002, 1e-4)]
    assert sorted(_ids(_all_params(opt))) == sorted(_ids(model.parameters()))
    # the saved yaml names the functions by import path: it loads and builds as well
    cfg = LazyConfig.load(str(tmp_path / "config.yaml"))
    cfg.optimizer.params.model = Toy()
    assert isinstance(instantiate(cfg.optimizer), CombinedOptimizer)


def test_frozen_parameters_stay_out_and_errors_are_clear():
    model = Toy()
    model.backbone[0].weight.requires_grad_(False)
    opt = _build(model)
    assert id(model.backbone[0].weight) not in _ids(_all_params(opt))

    with pytest.raises(ValueError, match="no submodule 'swn'"):
        _build(Toy(with_swn=False))
    with pytest.raises(ValueError, match="lacks trainable parameters"):
        build_swn_optimizer(model, torch.optim.SGD(model.head.parameters(), lr=0.1))
    sgd = torch.optim.SGD(model.head.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="exactly one optimizer"):
        CombinedOptimizer({"a": sgd, "b": torch.optim.Adam(model.head.parameters())})
    with pytest.raises(NotImplementedError, match="add the group to one of its optimizers"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)]})


def test_lr_multiplier_scales_sgd_and_adam_alike():
    model = Toy()
    opt = _build(model, lr=0.1)
    sched = LRMultiplier(opt, _multiplier(), max_iter=MAX_ITER)
    expected = [0.1, 0.55, 1.0, 0.1, 0.1, 0.01]  # warmup (linear), then the steps
    batch = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        for it, mult in enumerate(expected):
            assert opt["detector"].param_groups[0]["lr"] == pytest.approx(0.1 * mult, rel=1e-12)
            assert opt["swn"].param_groups[0]["lr"] == pytest.approx(1e-3 * mult, rel=1e-12)
            for g in opt.param_groups:
                assert g["lr"] == pytest.approx(g["initial_lr"] * mult, rel=1e-12)
            _train_steps(model, opt, sched, 1, batch)
    assert [g["initial_lr"] for g in opt["swn"].param_groups] == [1e-3]
    assert {g["initial_lr"] for g in opt["detector"].param_groups} == {0.1}


def test_gradient_clipping_covers_both_optimizers():
    model = Toy()
    opt = add_gradient_clipping(_build(model), max_norm=1.0)
    assert isinstance(opt, CombinedOptimizer)
    for i, p in enumerate(model.parameters()):
        p.grad = torch.full_like(p, 1.0 + i)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    total = torch.cat([g.flatten() for g in before.values()]).norm()
    assert total > 10
    swn_before = [p.detach().clone() for p in model.swn.parameters()]
    opt.step()
    for n, p in model.named_parameters():  # each gradient scaled by the same factor, SWN's too
        torch.testing.assert_close(p.grad, before[n] / (total + 1e-6))
    assert torch.cat([p.grad.flatten() for p in model.parameters()]).norm() == pytest.approx(1.0)
    assert all(not torch.equal(a, p) for a, p in zip(swn_before, model.swn.parameters()))


def test_grad_scaler_steps_all_or_nothing():
    batch = _batch()
    plain, scaled = Toy(), Toy()
    opt_plain, opt_scaled = _build(plain), add_gradient_clipping(_build(scaled), max_norm=1e3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)

    sum(plain(batch).values()).backward()
    opt_plain.step()
    scaler.scale(sum(scaled(batch).values())).backward()
    scaler.step(opt_scaled)  # unscales the grads of both children, then opt_scaled.step()
    scaler.update()
    for a, b in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert scaler.get_scale() == 2.0**10

    opt_scaled.zero_grad()
    scaler.scale(sum(scaled(batch).values())).backward()
    next(scaled.swn.parameters()).grad[0, 0] = float("inf")  # an overflow in the SWN only
    before = [p.detach().clone() for p in scaled.parameters()]
    scaler.step(opt_scaled)
    scaler.update()
    assert all(torch.equal(a, p) for a, p in zip(before, scaled.parameters()))  # no child stepped
    assert scaler.get_scale() == 2.0**9


def test_state_view_and_closure():
    model = Toy()
    opt = _build(model)
    batch = _batch()

    def closure():
        opt.zero_grad()
        loss = sum(model(batch).values())
        loss.backward()
        return loss

    assert len(opt.state) == 0 and model.head.weight not in opt.state
    loss = opt.step(closure)
    assert torch.is_tensor(loss)
    n_params = len(list(model.parameters()))
    assert len(opt.state) == n_params and set(map(id, opt.state)) == set(_ids(model.parameters()))
    assert "momentum_buffer" in opt.state[model.head.weight]
    w = model.swn[0].weight
    assert opt.state[w]["exp_avg"] is opt["swn"].state[w]["exp_avg"]
    assert opt.state.get(torch.zeros(1)) is None
    assert opt["detector"].state is opt.state and opt["swn"].state is opt.state  # one shared state


def _states_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_state_dict_round_trip_through_weights_only_load():
    batch = _batch()
    model = Toy()
    opt = _build(model)
    sched = LRMultiplier(opt, _multiplier(), max_iter=MAX_ITER)
    _train_steps(model, opt, sched, 3, batch)

    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)

    model2 = Toy(seed=1)
    model2.load_state_dict(model.state_dict())
    opt2 = _build(model2, lr=0.7)
    opt2.load_state_dict(loaded)
    for name in ("detector", "swn"):
        child, child2 = opt[name], opt2[name]
        for g, g2 in zip(child.param_groups, child2.param_groups):
            assert {k: v for k, v in g.items() if k != "params"} == {
                k: v for k, v in g2.items() if k != "params"
            }
        params = [p for g in child.param_groups for p in g["params"]]
        params2 = [p for g in child2.param_groups for p in g["params"]]
        assert all(p in child.state for p in params) and all(p2 in child2.state for p2 in params2)
        for p, p2 in zip(params, params2):
            _states_equal(child.state[p], child2.state[p2])
    adam_state = opt2["swn"].state[model2.swn[0].weight]
    assert adam_state["step"].item() == 3 and adam_state["exp_avg_sq"].abs().sum() > 0
    # the union follows the children's new group dicts
    assert opt2.param_groups[0] is opt2["detector"].param_groups[0]

    # ... and the next step is bit-identical
    _train_steps(model, opt, sched, 1, batch)
    sched2 = LRMultiplier(opt2, _multiplier(), max_iter=MAX_ITER, last_iter=2)
    _train_steps(model2, opt2, sched2, 1, batch)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))

    detector_only = {"state": {}, "param_groups": loaded["param_groups"][:-1]}
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt2.load_state_dict(detector_only)


def test_state_dict_of_the_former_per_child_layout_loads():
    """Checkpoints written when the state dict was {"optimizers": {name: child.state_dict()}} (before
    #12) continue bit-identically. The file holds Toy()'s weights and _build's state dict after two
    steps on _batch() with that CombinedOptimizer, and the weights after a third step."""
    saved = torch.load(os.path.join(os.path.dirname(__file__), "data", "swn_combined_optimizer_per_child_layout.pt"),
                       weights_only=True)
    assert list(saved["optimizer"]) == ["optimizers"]
    model = Toy(seed=1)
    model.load_state_dict(saved["model"])
    opt = _build(model)
    opt.load_state_dict(saved["optimizer"])
    loss = sum(model(_batch()).values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(torch.equal(v, saved["model_after_next_step"][k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="optimizers"):
        opt.load_state_dict({"optimizers": {"swn": saved["optimizer"]["optimizers"]["swn"]}})


def test_resume_equivalence_by_hand():
    batch = _batch()
    ref = Toy()
    ref_opt = add_gradient_clipping(_build(ref), max_norm=5.0)
    _train_steps(ref, ref_opt, LRMultiplier(ref_opt, _multiplier(), MAX_ITER), MAX_ITER, batch)

    model = Toy()
    opt = add_gradient_clipping(_build(model), max_norm=5.0)
    sched = LRMultiplier(opt, _multiplier(), MAX_ITER)
    _train_steps(model, opt, sched, 3, batch)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    model = Toy(seed=2)
    model.load_state_dict(ckpt["model"])
    opt = add_gradient_clipping(_build(model), max_norm=5.0)
    sched = LRMultiplier(opt, _multiplier(), MAX_ITER)
    opt.load_state_dict(ckpt["optimizer"])  # after building the scheduler, as torch documents
    sched.load_state_dict(ckpt["scheduler"])
    _train_steps(model, opt, sched, MAX_ITER - 3, batch)
    for (n, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), n


class _Crash(HookBase):
    def after_step(self):
        if self.trainer.iter == 2:
            raise RuntimeError("simulated crash")


def _trainer(model, out_dir, crash=False):
    out_dir.mkdir(exist_ok=True)  # train_net.py's default_setup makes it
    opt = add_gradient_clipping(_build(model), max_norm=5.0)
    trainer = SimpleTrainer(model, itertools.repeat(_batch()), opt)
    checkpointer = DetectionCheckpointer(model, str(out_dir), trainer=trainer)
    trainer.register_hooks(
        [
            hooks.LRScheduler(scheduler=_multiplier()),
            hooks.PeriodicCheckpointer(checkpointer, period=3, max_iter=MAX_ITER),
            _Crash() if crash else None,
        ]
    )
    return trainer, checkpointer


def test_resume_equivalence_through_detectron2_trainer(tmp_path):
    """What `train_net.py --resume` does: SimpleTrainer, LRScheduler hook, DetectionCheckpointer."""
    ref = Toy()
    trainer, _ = _trainer(ref, tmp_path / "ref")
    trainer.train(0, MAX_ITER)

    model = Toy()
    trainer, _ = _trainer(model, tmp_path / "run", crash=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train(0, MAX_ITER)
    assert (tmp_path / "run" / "model_0000002.pth").exists()

    model = Toy(seed=3)
    trainer, checkpointer = _trainer(model, tmp_path / "run")
    checkpointer.resume_or_load("", resume=True)  # torch.load's default weights_only=True
    assert trainer.iter == 2
    # LRMultiplier(last_iter=2) needs each group's initial_lr: restored with the optimizer state
    assert all(g["initial_lr"] in (0.1, 1e-3) for g in trainer.optimizer.param_groups)
    trainer.train(trainer.iter + 1, MAX_ITER)
    assert trainer.optimizer["swn"].state[model.swn[0].weight]["step"].item() == MAX_ITER
    for (n, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), n
