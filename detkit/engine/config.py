import difflib
from typing import List

from detectron2.config import LazyConfig
from omegaconf import OmegaConf


def _all_keys(node, prefix=""):
    for k in node.keys():
        key = f"{prefix}{k}"
        yield key
        v = node.get(k)  # noqa: not node[k]: that would resolve interpolations
        if OmegaConf.is_dict(v):
            yield from _all_keys(v, key + ".")


def apply_overrides_strict(cfg, overrides: List[str]):
    """Detectron2's ``LazyConfig.apply_overrides``, but a key that does not exist is an error
    (Detectron2 would silently add it, so a typo like ``train.max_iters=10`` did nothing).

    Prefix a key with ``+`` to add a new key on purpose, as in Hydra: ``+model.foo=1``.
    """
    plain, new = [], []
    for o in overrides:
        key = o.split("=", 1)[0]
        if "=" not in o:
            raise ValueError(f"Override {o!r} is not of the form key=value.")
        if key.startswith("+"):
            new.append(o[1:])
            continue
        if OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is _MISSING:
            known = list(_all_keys(cfg))
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(
                f"Config key {key!r} (from override {o!r}) does not exist in the config.{hint} "
                f"To add a new key on purpose, write +{o}."
            )
        plain.append(o)
    return LazyConfig.apply_overrides(cfg, plain + new)


_MISSING = object()
