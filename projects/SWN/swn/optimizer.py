"""Optimizers of SWN: the detector under its usual SGD, the sample weighting network under Adam.

The paper trains the tiny weighting network with Adam (lr 1e-3, weight decay 1e-4) while the
detector keeps its SGD; both follow the one learning-rate schedule. Detectron2's trainer, LR
scheduler hook, gradient clipping and checkpointer all handle exactly one ``torch.optim.Optimizer``,
so :class:`CombinedOptimizer` presents several optimizers as one:

* ``param_groups`` is the concatenation of the children's param-group dicts (the same dict
  objects: it is a torch ``Optimizer`` built on them), so ``LRMultiplier`` stores each group's own
  ``initial_lr`` (SGD's and Adam's) and scales them all by the same multiplier;
  ``add_gradient_clipping`` and ``GradScaler.unscale_`` see the parameters of every child.
* ``step()`` steps every child; ``state`` is one dict that the children share.
* ``state_dict()`` / ``load_state_dict()`` are torch's own (plain tensors and Python containers: it
  survives ``torch.load(weights_only=True)``; the groups carry each child's hyper-parameters).

LazyConfig (``train_net.py`` sets ``cfg.optimizer.params.model = model`` before ``instantiate``, as
for Detectron2's SGD config, so it needs no change)::

    from detectron2.config import LazyCall as L
    from swn.optimizer import build_swn_sgd, swn_optimizer_params

    optimizer = L(build_swn_sgd)(
        params=L(swn_optimizer_params)(model=None, swn_module="swn", weight_decay_norm=0.0),
        lr=0.01, momentum=0.9, weight_decay=1e-4,  # the detector's SGD (keys of common/optim.py)
        swn_lr=1e-3, swn_weight_decay=1e-4,        # the SWN's Adam
    )

or, turning a detector config's ``optimizer = get_config("common/optim.py").SGD`` into SWN's::

    optimizer._target_ = build_swn_sgd
    optimizer.params._target_ = swn_optimizer_params
    optimizer.swn_lr, optimizer.swn_weight_decay = 1e-3, 1e-4

From Python, :func:`build_swn_optimizer` takes the model and an already built detector optimizer.

Resume: the children's groups carry ``initial_lr`` (set by ``LRMultiplier``) into the state dict, so
``hooks.LRScheduler`` can rebuild ``LRMultiplier(last_iter=trainer.iter - 1)`` after
``DetectionCheckpointer.resume_or_load(resume=True)``, and training continues bit-identically. As
with any optimizer, add gradient clipping before an LR scheduler is built on it: the scheduler
stores a wrapper of the then ``step`` on the instance, which a later class swap would not reach.

Mixed precision: ``GradScaler.step(opt)`` unscales the gradients of ``opt.param_groups`` (all
children), skips ``opt.step()`` when any is inf/NaN (then no child steps), and otherwise calls
it, so it works as with a single optimizer; clipping (``add_gradient_clipping``) then sees
unscaled gradients. A ``fused=True`` child is stepped on the already unscaled gradients, which is
correct but gives up the fused unscale.
"""
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from detectron2.solver import get_default_optimizer_params
from torch.optim import Optimizer

from detkit.utils import unwrap_model

__all__ = [
    "CombinedOptimizer",
    "SWNOptimizerParams",
    "build_swn_optimizer",
    "build_swn_sgd",
    "swn_optimizer_params",
]


class CombinedOptimizer(Optimizer):
    """Several optimizers that act as one ``torch.optim.Optimizer`` (see the module docstring).

    Built with ``Optimizer.__init__`` on the children's own param-group dicts (torch keeps the dict
    objects), so that ``param_groups``, ``state``, ``zero_grad``, ``state_dict`` and
    ``load_state_dict`` are torch's own; each child keeps its slice of the groups and shares the
    one ``state`` dict (a parameter's state is where the child that optimizes it looks). ``step``
    steps every child.

    Args:
        optimizers: ``{name: optimizer}`` or a sequence (named ``"0"``, ``"1"``, ...). A parameter
            may belong to one child only. Children must not need a closure that is evaluated
            several times (LBFGS): ``step(closure)`` evaluates the closure once, then steps every
            child without it.

    ``add_param_group`` is not supported: build the combined optimizer from children that have
    all their groups.
    """

    def __init__(self, optimizers: Mapping[str, Optimizer] | Sequence[Optimizer]):
        if isinstance(optimizers, Mapping):
            named = OrderedDict((str(k), v) for k, v in optimizers.items())
        else:
            named = OrderedDict((str(i), v) for i, v in enumerate(optimizers))
        if not named:
            raise ValueError("CombinedOptimizer needs at least one optimizer")
        seen: dict[int, str] = {}
        for name, opt in named.items():
            if not isinstance(opt, Optimizer):
                raise TypeError(f"optimizers[{name!r}] is a {type(opt).__name__}, not an Optimizer")
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in seen:
                        raise ValueError(
                            f"a parameter of shape {tuple(p.shape)} is in optimizers "
                            f"{seen[id(p)]!r} and {name!r}: each parameter must have exactly one "
                            "optimizer"
                        )
                    seen[id(p)] = name
        super().__init__([g for opt in named.values() for g in opt.param_groups], defaults={})
        self._optimizers = named
        self._share_groups_and_state()

    def _share_groups_and_state(self) -> None:
        """Point every child at its slice of ``param_groups`` and at the one ``state``."""
        start = 0
        for opt in self._optimizers.values():
            count = len(opt.param_groups)
            opt.param_groups = self.param_groups[start : start + count]
            opt.state = self.state
            start += count

    @property
    def optimizers(self) -> Mapping[str, Optimizer]:
        """The children, by name (a read-only view)."""
        return MappingProxyType(self._optimizers)

    def __getitem__(self, name: str) -> Optimizer:
        return self._optimizers[name]

    def __getstate__(self) -> dict[str, Any]:
        return dict(super().__getstate__(), _optimizers=self._optimizers)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_optimizers", None) is not None:
            raise NotImplementedError(
                "CombinedOptimizer.add_param_group: add the group to one of its optimizers, "
                f"{list(self._optimizers)}, before combining them"
            )
        super().add_param_group(param_group)

    def step(self, closure: Callable[[], Any] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self._optimizers.values():
            opt.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``Optimizer.load_state_dict`` (it checks the group sizes and replaces the group
        dicts; the children are then pointed at the new ones). Also reads the per-child format of
        checkpoints written before: ``{"optimizers": {name: child.state_dict()}}``."""
        if "optimizers" in state_dict:
            state_dict = _merged_state_dict(state_dict["optimizers"], list(self._optimizers))
        super().load_state_dict(state_dict)
        self._share_groups_and_state()

    def __repr__(self) -> str:
        children = "".join(
            f"\n  {name}: " + repr(opt).replace("\n", "\n  ")
            for name, opt in self._optimizers.items()
        )
        return f"{type(self).__name__} ({children}\n)"


def _merged_state_dict(children: Mapping[str, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """One optimizer state dict from the children's (parameter ids renumbered in order)."""
    if list(children) != names:
        raise ValueError(f"the state dict is of optimizers {list(children)}, this CombinedOptimizer has {names}")
    state, groups, offset = {}, [], 0
    for name in names:
        child = children[name]
        ids = sorted({i for g in child["param_groups"] for i in g["params"]})
        renumber = {i: offset + k for k, i in enumerate(ids)}
        state.update({renumber[i]: v for i, v in child["state"].items()})
        groups += [dict(g, params=[renumber[i] for i in g["params"]]) for g in child["param_groups"]]
        offset += len(ids)
    return {"state": state, "param_groups": groups}


def _swn_parameters(model: torch.nn.Module, swn_module: str) -> list[torch.nn.Parameter]:
    model = unwrap_model(model)
    try:
        swn = model.get_submodule(swn_module)
    except AttributeError:
        raise ValueError(
            f"{type(model).__name__} has no submodule {swn_module!r} (the sample weighting "
            f"network); its children are {[n for n, _ in model.named_children()]}"
        ) from None
    params = [p for p in swn.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"model.{swn_module} has no parameter that requires grad")
    return params


def build_swn_optimizer(
    model: torch.nn.Module,
    detector_optimizer: Optimizer | Callable[[list[dict[str, Any]]], Optimizer],
    swn_lr: float = 1e-3,
    swn_weight_decay: float = 1e-4,
    swn_module: str = "swn",
) -> CombinedOptimizer:
    """``CombinedOptimizer({"detector": detector_optimizer, "swn": Adam(model.<swn_module>)})``.

    Args:
        model: the detector; its submodule ``swn_module`` (a dotted path) is the sample weighting
            network. A DDP / DataParallel wrapper is looked through.
        detector_optimizer: either an optimizer built over the model's parameters (for instance
            ``SGD(get_default_optimizer_params(model), ...)``, SWN's included: they are taken out of
            its groups, which requires that it has not stepped yet, and groups left empty are
            dropped), or a callable that builds it from a list of param-group dicts (Detectron2's
            ``get_default_optimizer_params(model)`` without the SWN's parameters).
        swn_lr, swn_weight_decay: Adam's lr and (L2) weight decay for every SWN parameter. Under
            ``LRMultiplier`` both lrs get the schedule's multiplier.

    Every parameter of the model that requires grad ends in exactly one group: the SWN's in
    Adam's single group, the others in the detector optimizer's; a trainable parameter that the
    detector optimizer lacks is an error.
    """
    swn_params = _swn_parameters(model, swn_module)
    swn_ids = {id(p) for p in swn_params}
    if isinstance(detector_optimizer, Optimizer):
        detector = detector_optimizer
        if any(id(p) in swn_ids for g in detector.param_groups for p in g["params"]):
            if len(detector.state):
                raise ValueError(
                    "the detector optimizer has state (it has stepped): cannot take the SWN's "
                    "parameters out of it"
                )
            groups = []
            for group in detector.param_groups:
                keep = [i for i, p in enumerate(group["params"]) if id(p) not in swn_ids]
                if keep:
                    group["params"] = [group["params"][i] for i in keep]
                    if "param_names" in group:
                        group["param_names"] = [group["param_names"][i] for i in keep]
                    groups.append(group)
            if not groups:
                raise ValueError("the detector optimizer has no parameter outside the SWN")
            detector.param_groups[:] = groups
    elif callable(detector_optimizer):
        groups = get_default_optimizer_params(unwrap_model(model))
        detector = detector_optimizer(_without(groups, swn_ids))
    else:
        raise TypeError(
            f"detector_optimizer must be an Optimizer or a callable, not {type(detector_optimizer)}"
        )

    in_detector = {id(p) for g in detector.param_groups for p in g["params"]}
    missing = [
        name
        for name, p in unwrap_model(model).named_parameters()
        if p.requires_grad and id(p) not in swn_ids and id(p) not in in_detector
    ]
    if missing:
        raise ValueError(f"the detector optimizer lacks trainable parameters {missing}")
    swn = torch.optim.Adam(swn_params, lr=swn_lr, weight_decay=swn_weight_decay)
    return CombinedOptimizer({"detector": detector, "swn": swn})


def _without(groups: list[dict[str, Any]], ids: set[int]) -> list[dict[str, Any]]:
    out = []
    for group in groups:
        params = [p for p in group["params"] if id(p) not in ids]
        if params:
            out.append({**group, "params": params})
    return out


@dataclass
class SWNOptimizerParams:
    """What :func:`swn_optimizer_params` hands to :func:`build_swn_sgd`."""

    model: torch.nn.Module
    swn_module: str
    detector_groups: list[dict[str, Any]] = field(repr=False)


def swn_optimizer_params(
    model: torch.nn.Module, swn_module: str = "swn", **kwargs
) -> SWNOptimizerParams:
    """The LazyConfig ``optimizer.params`` of :func:`build_swn_sgd`.

    ``kwargs`` go to Detectron2's ``get_default_optimizer_params`` (``weight_decay_norm``,
    ``overrides``, ...) for the detector's groups, from which the SWN's parameters are taken out.
    """
    swn_ids = {id(p) for p in _swn_parameters(model, swn_module)}
    groups = _without(get_default_optimizer_params(unwrap_model(model), **kwargs), swn_ids)
    return SWNOptimizerParams(model=model, swn_module=swn_module, detector_groups=groups)


def build_swn_sgd(
    params: SWNOptimizerParams,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    nesterov: bool = False,
    swn_lr: float = 1e-3,
    swn_weight_decay: float = 1e-4,
    **sgd_kwargs,
) -> CombinedOptimizer:
    """LazyConfig entry point: SGD for the detector (same keys as Detectron2's ``common/optim.py``
    SGD: ``lr``, ``momentum``, ``weight_decay``, ``nesterov``, plus any other ``torch.optim.SGD``
    argument) and Adam
    for the SWN. ``params`` is ``L(swn_optimizer_params)(model=None, ...)``, whose ``model``
    ``train_net.py`` sets."""
    if not isinstance(params, SWNOptimizerParams):
        raise TypeError(
            "build_swn_sgd(params=...) takes L(swn_optimizer_params)(model=None, ...), "
            f"not {type(params).__name__}"
        )
    sgd = torch.optim.SGD(
        params.detector_groups,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
        **sgd_kwargs,
    )
    return build_swn_optimizer(
        params.model, sgd, swn_lr=swn_lr, swn_weight_decay=swn_weight_decay,
        swn_module=params.swn_module,
    )
