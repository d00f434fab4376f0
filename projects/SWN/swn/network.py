"""The sample weighting network of "Learning a Unified Sample Weighting Network for Object
Detection" (Cai et al., CVPR 2020), Sec. 3.3 / Fig. 3(c), as a plain ``nn.Module``.

For every sample (anchor or sampled RoI) the network reads four detector statistics, the
classification loss, the 4-d per-coordinate regression loss, the IoU of the decoded box with its
ground truth and the probability of the ground-truth class (IoU and prob are 0 for negatives), embeds
each with its own small MLP (the paper's F, G, H, K), concatenates the embeddings (Eq. 10) and
predicts one log-variance ``m`` per task (Eq. 11). The loss weights are ``exp(-m)`` (code) or
``exp(-2m)`` (paper); see :mod:`swn.loss`.

In a dense head nearly every sample is a negative, whose regression loss, IoU and probability are
exactly 0; for those samples ``m`` is a function of the classification loss alone, a ReLU MLP of
one scalar, which :mod:`swn.fast_path` evaluates exactly as the piecewise-affine function it is
(see ``SampleWeightingNetwork(fast_path=...)``).
"""
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from .fast_path import fast_forward, relu_mlp_of_scalar

__all__ = ["SampleWeightingNetwork", "relu_mlp_of_scalar"]


def _mlp(in_dim: int, hidden: int, out_dim: int, last_relu: bool) -> nn.Sequential:
    layers = [nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)]
    if last_relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SampleWeightingNetwork(nn.Module):
    """Predicts per-sample, per-task log-variances ``m`` from detached detector statistics.

    Args:
        num_tasks: 2 (cls, reg: Faster R-CNN, RetinaNet) or 3 (cls, reg, mask: Mask R-CNN). With 3
            the per-RoI mask loss is a fifth input with its own embedding.
        embed_dim: width of every embedding and of the head's hidden layer (64 in the paper).
        shared_head: ``True`` (reference code): one head
            ``Linear(n_inputs * embed_dim, embed_dim) -> ReLU -> Linear(embed_dim, num_tasks)``.
            ``False`` (paper, "two separate MLP networks" W_cls, W_reg): one head of that shape with
            a single output per task.
        clamp: ``m`` is clamped to ``[-clamp, clamp]`` (2.0 in the reference code); ``None`` or 0
            disables it.
        init_std: every Linear weight is drawn from N(0, init_std) and every bias is 0, so that at the
            start ``m`` is ~0 and all loss weights are ~1.
        fast_path: a speed switch, not a model change. ``True``: the samples whose inputs other
            than the classification loss are all 0 (the negatives of a dense head) are evaluated
            with :func:`relu_mlp_of_scalar`, the others the plain way (see :meth:`_fast_forward`).
            ``False``: every sample the plain way. Both give the same ``m`` and gradients up to
            float rounding.
    """

    def __init__(
        self,
        num_tasks: int = 2,
        embed_dim: int = 64,
        shared_head: bool = True,
        clamp: Optional[float] = 2.0,
        init_std: float = 1e-4,
        fast_path: bool = True,
    ):
        super().__init__()
        if num_tasks not in (2, 3):
            raise ValueError(f"SampleWeightingNetwork: num_tasks must be 2 or 3, got {num_tasks}")
        if clamp is not None and not float(clamp) >= 0:
            raise ValueError(
                f"SampleWeightingNetwork: clamp (model.swn.clamp, or ...box_predictor.swn.clamp) must be > 0, or "
                f"0 / None for no clamp, got {clamp}: m is clamped to [-clamp, clamp], and a negative bound "
                "fixes every m at one value and stops the SWN's gradient. The reference code uses 2.0."
            )
        self.num_tasks = num_tasks
        self.shared_head = shared_head
        self.clamp = float(clamp) if clamp else None
        self.fast_path = fast_path

        # Input name -> feature width. Dict order is the concatenation order.
        in_dims = {"cls": 1, "reg": 4, "iou": 1, "prob": 1}
        if num_tasks == 3:
            in_dims["mask"] = 1
        self.embeddings = nn.ModuleDict(
            {name: _mlp(dim, embed_dim, embed_dim, last_relu=True) for name, dim in in_dims.items()}
        )
        feat_dim = len(in_dims) * embed_dim
        if shared_head:
            self.head = _mlp(feat_dim, embed_dim, num_tasks, last_relu=False)
        else:
            self.heads = nn.ModuleList(_mlp(feat_dim, embed_dim, 1, last_relu=False) for _ in range(num_tasks))

        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=init_std)
                nn.init.zeros_(module.bias)

    def forward(
        self,
        loss_cls: Tensor,
        loss_reg: Tensor,
        iou: Tensor,
        prob: Tensor,
        loss_mask: Optional[Tensor] = None,
        detach_iou_prob: bool = True,
    ) -> Tensor:
        """
        Args:
            loss_cls: (S,) per-sample classification loss.
            loss_reg: (S, 4) per-sample, per-coordinate regression loss (0 for negatives).
            iou: (S,) IoU of the decoded box with its ground truth (0 for negatives).
            prob: (S,) predicted probability of the ground-truth class (0 for negatives).
            loss_mask: (S,) per-RoI mask loss; required iff ``num_tasks == 3``.

        The losses are always detached here; IoU and prob too unless ``detach_iou_prob=False``
        (the reference RetinaNet's gradient path, :class:`swn.SWNConfig` ``detach_inputs``):
        by default the SWN learns from the detector's statistics but never sends gradient back into
        the detector through them.

        Returns:
            (S, num_tasks) ``m``; column 0 is m_cls, 1 is m_reg, 2 is m_mask.
        """
        inputs = {"cls": loss_cls, "reg": loss_reg, "iou": iou, "prob": prob}
        if self.num_tasks == 3:
            if loss_mask is None:
                raise ValueError("SampleWeightingNetwork: loss_mask is required when num_tasks=3")
            inputs["mask"] = loss_mask
        elif loss_mask is not None:
            raise ValueError("SampleWeightingNetwork: loss_mask is only accepted when num_tasks=3")

        num = loss_cls.shape[0] if loss_cls.dim() == 1 else -1
        widths = {name: embed[0].in_features for name, embed in self.embeddings.items()}
        expected = {k: (num,) if w == 1 else (num, w) for k, w in widths.items()}
        if num < 0 or any(tuple(x.shape) != expected[k] for k, x in inputs.items()):
            got = ", ".join(f"{k}={tuple(x.shape)}" for k, x in inputs.items())
            raise ValueError(
                "SampleWeightingNetwork: expected loss_cls (S,), loss_reg (S, 4), iou (S,), prob (S,)"
                f"{', loss_mask (S,)' if self.num_tasks == 3 else ''}; got {got}"
            )

        dtype = self.embeddings["cls"][0].weight.dtype
        keep_graph = () if detach_iou_prob else ("iou", "prob")
        inputs = {
            k: (x if k in keep_graph else x.detach()).to(dtype).reshape(num, widths[k]) for k, x in inputs.items()
        }
        heads = [self.head] if self.shared_head else list(self.heads)
        m = self._fast_forward(inputs, heads) if self.fast_path else None
        if m is None:
            m = self._plain_forward(inputs, heads)
        if self.clamp is not None:
            m = m.clamp(-self.clamp, self.clamp)
        return m

    def _plain_forward(self, inputs: Dict[str, Tensor], heads: List[nn.Sequential]) -> Tensor:
        """(S, num_tasks) unclamped ``m``: the embeddings concatenated (Eq. 10), then the head(s)."""
        feat = torch.cat([self.embeddings[k](x) for k, x in inputs.items()], dim=1)  # (S, n_in * E)
        return torch.cat([head(feat) for head in heads], dim=1)

    def _fast_forward(self, inputs: Dict[str, Tensor], heads: List[nn.Sequential]) -> Optional[Tensor]:
        """:func:`swn.fast_path.fast_forward` of this network, or None where it would not pay."""
        return fast_forward(self.embeddings, heads, inputs, lambda rows: self._plain_forward(rows, heads))

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, shared_head={self.shared_head}, clamp={self.clamp}"
