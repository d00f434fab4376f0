import ast
import difflib
import inspect
import os
from typing import List, Sequence

from detectron2.config import LazyConfig
from detectron2.utils.registry import locate
from omegaconf import OmegaConf

from ..modeling.soft_nms import SOFT_NMS_DEFAULTS


def _all_keys(node, prefix=""):
    for k in node.keys():
        key = f"{prefix}{k}"
        yield key
        v = node._get_node(k)  # not node[k], which would resolve interpolations
        if OmegaConf.is_dict(v):
            yield from _all_keys(v, key + ".")


def apply_overrides_strict(cfg, overrides: List[str]):
    """Detectron2's ``LazyConfig.apply_overrides``, but a key that does not exist is an error
    (Detectron2 would silently add it, so a typo like ``train.max_iters=10`` did nothing).

    A key that a ``LazyCall`` node does not list but its ``_target_`` accepts as an argument
    (``model.backbone.pretrained=False``) is fine. Prefix a key with ``+`` to add any other new key
    on purpose, as in Hydra: ``+model.foo=1``.

    A value of the wrong type for a number or boolean key is an error too (``train.max_iter=ten``,
    ``test.aug.enabled=false``: Detectron2 would keep the string, which is truthy).
    """
    plain, new = [], []
    for o in overrides:
        key = o.split("=", 1)[0]
        if "=" not in o:
            raise ValueError(f"Override {o!r} is not of the form key=value.")
        if key.startswith("+"):
            new.append(o[1:])
            continue
        missing = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is _MISSING
        if missing and not _is_argument_of_lazy_call(cfg, key):
            known = list(_all_keys(cfg))
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(
                f"Config key {key!r} (from override {o!r}) does not exist in the config.{hint} "
                f"To add a new key on purpose, write +{o}."
            )
        _check_override_type(cfg, key, o.split("=", 1)[1], o)
        plain.append(o)
    return LazyConfig.apply_overrides(cfg, plain + new)


def _check_override_type(cfg, key: str, raw: str, override: str) -> None:
    """Refuse a value that Detectron2 would keep as a string where the config has a number or a
    boolean (it parses values with ``ast.literal_eval`` and keeps what does not parse as a string)."""
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not OmegaConf.is_dict(parent):
        return
    if name in parent:
        if OmegaConf.is_interpolation(parent, name):
            return
        old = parent._get_node(name)._value()
    else:  # an argument of the LazyCall's target that the config does not list: its default
        param = _lazy_call_parameter(cfg, key)
        if param is None or param.default is inspect.Parameter.empty:
            return
        old = param.default
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if value is None or old is None:
        return
    if isinstance(old, bool) and not isinstance(value, bool):
        kind, example = "True or False", f"{key}={not old}"
    elif isinstance(old, (int, float)) and not isinstance(old, bool) and (
        isinstance(value, bool) or not isinstance(value, (int, float))
    ):
        kind, example = ("a whole number" if isinstance(old, int) else "a number"), f"{key}={old!r}"
    else:
        return
    source = "the config has" if name in parent else "its default is"
    raise ValueError(
        f"Override {override!r}: {key} must be {kind} ({source} {old!r}), not {raw!r}. "
        f"Write e.g. {example}."
    )


class ConfigError(ValueError):
    """A config file, an override or a config setting cannot be used; a one-line message naming it
    and what to do (what the entry points print instead of a traceback)."""


def load_checked_config(config_file: str, opts: Sequence[str] = (), train: bool = True, check_data: bool = True):
    """``config_file`` loaded as train_net.py uses it, with every check that needs nothing built:
    the file exists and loads, the ``test`` node (:func:`add_test_defaults`), the strict ``key=value``
    overrides (:func:`apply_overrides_strict`: unknown keys, wrong types), the training settings
    (:func:`check_train_settings`, when ``train``) and, when ``check_data``, the registered files
    of the datasets it reads (training data only when ``train``).

    Raises:
        ConfigError: one line naming the file, key or dataset and what to do.
    """
    from ..data.availability import check_dataset_files, config_dataset_names
    from ..data.errors import DatasetError

    if not config_file:
        raise ConfigError(
            "no --config-file: give a LazyConfig .py file (or a run's config.yaml), "
            "e.g. --config-file configs/TreeCrowns/retinanet_mnv2_fpn.py"
        )
    if not os.path.isfile(config_file):
        raise ConfigError(f"--config-file {config_file}: no such file (the configs are under configs/)")
    try:
        cfg = LazyConfig.load(config_file)
    except Exception as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"--config-file {config_file}: cannot be loaded ({type(e).__name__}: {detail})") from e
    try:
        cfg = add_test_defaults(cfg)
        cfg = apply_overrides_strict(cfg, list(opts))
        if train:
            check_train_settings(cfg)
    except (KeyError, ValueError) as e:
        raise ConfigError(e.args[0] if e.args else str(e)) from e
    if check_data:
        try:
            check_dataset_files(config_dataset_names(cfg, train=train))
        except DatasetError as e:
            raise ConfigError(str(e)) from e
    return cfg


_MISSING = object()


def _is_argument_of_lazy_call(cfg, key: str) -> bool:
    return _lazy_call_parameter(cfg, key) is not None


def _lazy_call_parameter(cfg, key: str):
    """The ``inspect.Parameter`` named by the last part of ``key`` of the ``_target_`` of the
    LazyCall node ``key`` is in, or None."""
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not OmegaConf.is_dict(parent) or "_target_" not in parent:
        return None
    target = parent._target_
    if isinstance(target, str):
        target = locate(target)
    # A subclass that takes **kwargs passes them on: look at its bases' __init__ too.
    callables = [c.__init__ for c in target.__mro__ if c is not object] if inspect.isclass(target) else [target]
    for fn in callables:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return None
        if name in params and params[name].kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            return params[name]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
    return None


#: Defaults of the ``test`` node that train_net.py adds to every config (see add_test_defaults):
#: the papers' multi-scale + flip test (short sides 400-1200, long side <= 4000; SWN Table 3,
#: CleanAnchors Table 6) and Soft-NMS with Bodla et al.'s settings, both off.
TEST_DEFAULTS = dict(
    aug=dict(enabled=False, min_sizes=[400, 500, 600, 700, 900, 1000, 1100, 1200], max_size=4000, flip=True),
    soft_nms=dict(enabled=False, **SOFT_NMS_DEFAULTS),
)


def add_test_defaults(cfg):
    """Give ``cfg`` a complete ``test`` node: :data:`TEST_DEFAULTS`, overridden by whatever the
    config file sets under ``test`` (a config may set only ``test.aug.min_sizes``, say). Call it
    before :func:`apply_overrides_strict`, so that ``test.aug.enabled=True`` is an existing key on
    every config. A key under ``test`` that the defaults do not have is an error (a typo would
    otherwise be ignored). Returns ``cfg``, changed in place."""
    given = cfg.get("test", None)
    defaults = OmegaConf.create(TEST_DEFAULTS)
    if given is None:
        cfg.test = defaults
        return cfg
    known = set(_all_keys(defaults))
    if not OmegaConf.is_dict(given):
        given = OmegaConf.create(given)  # raises for anything but a mapping
    for key in _all_keys(given):
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" Did you mean {', '.join('test.' + c for c in close)}?" if close else ""
            options = ", ".join(sorted("test." + k for k in known))
            raise KeyError(f"Config key 'test.{key}' is not a test option ({options}).{hint}")
    cfg.test = OmegaConf.merge(defaults, given)
    return cfg


def check_train_settings(cfg) -> None:
    """Refuse training settings that would run wrong without an error of their own, naming the key:
    ``train.max_iter`` below 1 (0 divides by zero in the schedule, a negative value exits at once and
    writes results of a model that never trained) and ``train.clip_grad.max_norm`` <= 0 when
    clipping is enabled."""
    from .optim import check_clip_max_norm

    max_iter = cfg.train.get("max_iter", None)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(
            f"train.max_iter={max_iter!r}: the number of training iterations must be a whole number >= 1. "
            "To evaluate a checkpoint without training use --eval-only train.init_checkpoint=PATH."
        )
    clip = cfg.train.get("clip_grad", None)
    if clip is not None and clip.get("enabled", False):
        check_clip_max_norm(clip.get("max_norm", None))
