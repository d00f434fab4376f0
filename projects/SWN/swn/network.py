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
one scalar, which :func:`relu_mlp_of_scalar` evaluates exactly as the piecewise-affine function it
is, at a per-sample cost of a binary search instead of matrix products (see
``SampleWeightingNetwork(fast_path=...)``).
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SampleWeightingNetwork", "relu_mlp_of_scalar"]


def _piece_index(breaks: Tensor, values: Tensor) -> Tensor:
    """Index of the piece of each value: with sorted, distinct ``breaks`` b_0 < ... < b_{n-1} the
    pieces are, in order, ``[.., b_0), {b_0}, (b_0, b_1), {b_1}, ..., {b_{n-1}}, (b_{n-1}, ..]``,
    i.e. interval i is piece 2i and break i is piece 2i + 1."""
    if breaks.numel() == 0:
        return torch.zeros(values.shape, dtype=torch.long, device=values.device)
    i = torch.searchsorted(breaks, values)  # number of breaks < value
    on_break = breaks[i.clamp(max=breaks.numel() - 1)] == values
    return 2 * i + on_break.long()


def _piece_bounds(breaks: Tensor, lo: Tensor, hi: Tensor):
    """(left, right, closed_left, closed_right), each (2n + 1,): the pieces of :func:`_piece_index`
    within ``[lo, hi]``; a break is the degenerate piece [b, b] with both ends open, so nothing lies
    strictly inside it."""
    n = breaks.numel()
    edges = torch.cat([lo.reshape(1), breaks, hi.reshape(1)])
    left, right = breaks.new_empty(2 * n + 1), breaks.new_empty(2 * n + 1)
    left[0::2], right[0::2] = edges[:-1], edges[1:]
    left[1::2], right[1::2] = breaks, breaks
    closed_left = torch.zeros(2 * n + 1, dtype=torch.bool, device=breaks.device)
    closed_right = closed_left.clone()
    closed_left[0], closed_right[-1] = True, True
    return left, right, closed_left, closed_right


def relu_mlp_of_scalar(
    x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], max_pieces: int
) -> Optional[Tensor]:
    """``A_n(relu(A_{n-1}(... relu(A_1(x[:, None])))))`` with ``A_i(h) = h @ W_i.T + b_i``, evaluated
    as the piecewise-affine function of the scalar ``x`` that it is.

    Between consecutive *breakpoints*, values of ``x`` at which the input of some ReLU changes
    sign, every ReLU unit is either the identity or zero, so the network is
    ``x * slope_p + intercept_p`` on each piece ``p``. The pieces within ``[min(x), max(x)]`` are
    found layer by layer (a unit's input is affine on each piece of the previous layers, so it
    changes sign at most once there); a breakpoint is a piece of its own, on which a ReLU input of
    exactly 0 is inactive, as in ``torch.relu`` and its gradient. ``slope_p`` and ``intercept_p``
    are computed from the weights with autograd under the pieces' fixed ReLU patterns, which are
    the samples' own patterns, so values and gradients are those of the plain evaluation (equal up
    to float rounding). Per sample the cost is one binary search and one multiply-add instead of
    the layers' matrix products; per piece it is the layers' matrix products.

    Args:
        x: (S,) finite inputs.
        weights: n >= 1 tensors (out_i, in_i) with in_1 = 1; biases: n tensors (out_i,). A ReLU
            follows every layer but the last.
        max_pieces: return None (the caller evaluates the plain way) as soon as more pieces than
            this would be needed.

    Returns:
        (S, out_n) tensor, or None.
    """
    if len(weights) != len(biases) or not weights or weights[0].shape[1] != 1:
        raise ValueError("relu_mlp_of_scalar: need n >= 1 weights (out_i, in_i) with in_1 = 1 and n biases")
    if x.dim() != 1:
        raise ValueError(f"relu_mlp_of_scalar: x must be (S,), got {tuple(x.shape)}")
    if x.numel() == 0:
        return x.new_zeros((0, weights[-1].shape[0])) + biases[-1]
    with torch.no_grad():
        lo, hi = x.min(), x.max()
    breaks = x.new_empty(0)  # sorted, distinct, within [lo, hi]
    slope, intercept = x.new_ones(1, 1), x.new_zeros(1, 1)  # per piece: h = x * slope + intercept
    for layer, (w, b) in enumerate(zip(weights, biases)):
        slope, intercept = slope @ w.t(), torch.addmm(b, intercept, w.t())  # (P, out)
        if layer == len(weights) - 1:
            break
        with torch.no_grad():
            left, right, closed_left, closed_right = (v[:, None] for v in _piece_bounds(breaks, lo, hi))
            crossing = -intercept / slope  # (P, out): where each unit's input is 0 on each piece
            inside = ((crossing > left) | (closed_left & (crossing == left))) & (
                (crossing < right) | (closed_right & (crossing == right))
            )
            refined = torch.unique(torch.cat([breaks, crossing[inside]]))
            if 2 * refined.numel() + 1 > max_pieces:
                return None
            left, right, _, _ = _piece_bounds(refined, lo, hi)
            representative = (left + right) / 2  # inside each new piece (the break itself for a break)
            owner = _piece_index(breaks, representative)
            active = torch.addcmul(intercept[owner], representative[:, None], slope[owner]) > 0
        breaks = refined
        slope, intercept = slope[owner] * active, intercept[owner] * active
    piece = _piece_index(breaks, x)
    return torch.addcmul(intercept[piece], x[:, None], slope[piece])


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
        (the reference RetinaNet's gradient path, :class:`swn.SWNWeighting` ``detach_inputs``):
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
        """:meth:`_plain_forward` computed another way, or None where that would not pay.

        A sample whose inputs besides ``cls`` are all 0 has one constant embedding ``c`` of them;
        with its head's first layer split by input as ``[W_cls | W_rest]``, its ``m`` is the ReLU
        MLP of the scalar classification loss
        ``Linear_2(relu(W_cls @ e_cls(loss_cls) + (W_rest @ c + b_1)))``, which
        :func:`relu_mlp_of_scalar` evaluates for all samples at once; the other samples (the
        positives) are then overwritten by the plain evaluation. Used when at least half the
        samples are such negatives and the pieces are fewer than a quarter of the samples. Under
        autocast the negatives' ``m`` is computed in the inputs' dtype (float32).

        Args:
            inputs: name -> (S, width) detached inputs, ``cls`` first (the concatenation order).
        """
        names = list(inputs)
        rest = names[1:]
        x = inputs[names[0]][:, 0]
        varying = (inputs[rest[0]] != 0).any(dim=1)
        for k in rest[1:]:
            varying |= (inputs[k] != 0).any(dim=1)
        rows = varying.nonzero().squeeze(1)  # (R,) samples with a non-zero input besides cls
        if x.numel() == 0 or 2 * rows.numel() > x.numel() or not torch.isfinite(x).all():
            return None

        embed = self.embeddings[names[0]]  # Linear(1, E), ReLU, Linear(E, E), ReLU
        columns = []
        # In the input dtype also under autocast: breakpoints from half-precision products would be
        # coarse, and searchsorted needs one dtype.
        with torch.autocast(device_type=x.device.type, enabled=False):
            const = torch.cat(
                [self.embeddings[k](inputs[k].new_zeros((1, inputs[k].shape[1]))) for k in rest], dim=1
            )
            for head in heads:  # Linear(n_in * E, E), ReLU, Linear(E, T)
                first, last = head[0], head[2]
                w_cls, w_rest = first.weight.split([embed[2].out_features, const.shape[1]], dim=1)
                column = relu_mlp_of_scalar(
                    x,
                    [embed[0].weight, embed[2].weight, w_cls, last.weight],
                    [embed[0].bias, embed[2].bias, F.linear(const, w_rest, first.bias)[0], last.bias],
                    max_pieces=x.numel() // 4,
                )
                if column is None:
                    return None
                columns.append(column)
        m = torch.cat(columns, dim=1)
        if rows.numel() > 0:
            plain = self._plain_forward({k: v[rows] for k, v in inputs.items()}, heads)
            m = m.index_put((rows,), plain.to(m.dtype))
        return m

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, shared_head={self.shared_head}, clamp={self.clamp}"
