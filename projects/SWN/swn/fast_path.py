"""The CPU fast path of :class:`swn.network.SampleWeightingNetwork`: a speed switch, not a model change.

In a dense head nearly every sample is a negative, whose regression loss, IoU and probability are
exactly 0; for those samples ``m`` is a function of the classification loss alone, a ReLU MLP of
one scalar, which :func:`relu_mlp_of_scalar` evaluates exactly as the piecewise-affine function it
is, at a per-sample cost of a binary search instead of matrix products. :func:`fast_forward` uses
it for those samples and the plain network for the others.
"""
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["relu_mlp_of_scalar", "fast_forward"]


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


def fast_forward(
    embeddings: nn.ModuleDict,
    heads: List[nn.Sequential],
    inputs: Dict[str, Tensor],
    plain_forward: Callable[[Dict[str, Tensor]], Tensor],
) -> Optional[Tensor]:
    """The network's unclamped ``m`` (S, num_tasks) computed another way, or None where that would
    not pay.

    A sample whose inputs besides ``cls`` are all 0 has one constant embedding ``c`` of them;
    with its head's first layer split by input as ``[W_cls | W_rest]``, its ``m`` is the ReLU
    MLP of the scalar classification loss
    ``Linear_2(relu(W_cls @ e_cls(loss_cls) + (W_rest @ c + b_1)))``, which
    :func:`relu_mlp_of_scalar` evaluates for all samples at once; the other samples (the
    positives) are then overwritten by ``plain_forward`` of their rows. Used when at least half the
    samples are such negatives and the pieces are fewer than a quarter of the samples. Under
    autocast the negatives' ``m`` is computed in the inputs' dtype (float32).

    Args:
        embeddings: name -> Linear(w, E), ReLU, Linear(E, E), ReLU of each input.
        heads: the head(s) Linear(n_in * E, E), ReLU, Linear(E, T).
        inputs: name -> (S, width) detached inputs, ``cls`` first (the concatenation order).
        plain_forward: the network's plain evaluation of some rows of ``inputs``.
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

    embed = embeddings[names[0]]  # Linear(1, E), ReLU, Linear(E, E), ReLU
    columns = []
    # In the input dtype also under autocast: breakpoints from half-precision products would be
    # coarse, and searchsorted needs one dtype.
    with torch.autocast(device_type=x.device.type, enabled=False):
        const = torch.cat(
            [embeddings[k](inputs[k].new_zeros((1, inputs[k].shape[1]))) for k in rest], dim=1
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
        plain = plain_forward({k: v[rows] for k, v in inputs.items()})
        m = m.index_put((rows,), plain.to(m.dtype))
    return m
