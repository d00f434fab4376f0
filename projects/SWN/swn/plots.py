"""Pictures of :class:`swn.analysis.SWNSamples` (positive anchors of a RetinaNet): the SWN paper's
Fig. 5 (the classification loss of positives by IoU) and the learned weight as a function of each
of the SWN's inputs."""
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import torch
from matplotlib.figure import Figure

from detkit.visualization import assign_bins, bin_labels, box_plot_by_bin, grouped_bars, share_by_bin

from .analysis import SWNSamples, swn_input_names, sweep_swn_input
from .loss import sample_weights

__all__ = ["DEFAULT_IOU_EDGES", "loss_share_by_iou", "loss_by_iou_figure", "input_sweeps", "weight_vs_inputs_figure"]

# [0, 0.5) holds the positives whose decoded box drifted below 0.5 IoU, so the bins cover all.
DEFAULT_IOU_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

INPUT_LABELS = {
    "cls_loss": "classification loss (focal, summed over classes)",
    "reg_loss": "box loss (smooth-L1, summed over 4 deltas)",
    "iou": "IoU of the predicted box with its GT",
    "prob": "probability of the GT class",
}


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def loss_share_by_iou(samples: SWNSamples, edges: Sequence[float] = DEFAULT_IOU_EDGES,
                      weighted: bool = True) -> np.ndarray:
    """Percentage of the positives' total classification loss (``cls_weight * cls_loss`` if
    ``weighted``, else ``cls_loss``) carried by the positives of each IoU bin: the y-axis of SWN
    Fig. 5. Returns (B,) summing to 100 (bins cover [0, 1])."""
    loss = _numpy(samples.cls_loss) * (_numpy(samples.cls_weight) if weighted else 1.0)
    return share_by_bin(assign_bins(_numpy(samples.iou), edges), loss, len(edges) - 1)


def loss_by_iou_figure(runs: Mapping[str, SWNSamples], edges: Sequence[float] = DEFAULT_IOU_EDGES,
                       title: str = "") -> Figure:
    """SWN Fig. 5 and what stands behind it, for one or more models' samples (the first run is
    the one whose per-sample statistics are drawn; stock models have weights 1):

    (a) share (%) of the positives' classification loss per IoU bin: for every run the loss as
        weighted in training, and for SWN runs also unweighted;
    (b) per-sample weighted classification loss per IoU bin (box plots, log scale), first run;
    (c) mean per-sample weights per IoU bin, first run: ``exp(-m_cls)`` as the SWN predicts it
        for the sample alone, the classification weight actually applied (after averaging m_cls
        over the batch), and the box-loss weight.
    """
    if not runs:
        raise ValueError("loss_by_iou_figure: no runs")
    labels = bin_labels(edges)
    num_bins = len(labels)
    shares = {}
    for name, s in runs.items():
        weights_vary = not np.allclose(_numpy(s.cls_weight), 1.0) or not np.allclose(_numpy(s.m_cls), 0.0)
        if weights_vary:
            shares[f"{name}: weighted (as trained)"] = loss_share_by_iou(s, edges, weighted=True)
            shares[f"{name}: unweighted"] = loss_share_by_iou(s, edges, weighted=False)
        else:
            shares[name] = loss_share_by_iou(s, edges, weighted=False)

    first_name, first = next(iter(runs.items()))
    bins = assign_bins(_numpy(first.iou), edges)
    fig = Figure(figsize=(15, 4.6))
    ax_share, ax_box, ax_weight = fig.subplots(1, 3)
    grouped_bars(ax_share, labels, shares, ylabel="% of the positives' classification loss")
    ax_share.set_ylim(0, 1.45 * max(float(np.max(v)) for v in shares.values()) + 1e-6)  # room for the legend
    ax_share.set_xlabel("IoU of the predicted box with its GT")
    ax_share.set_title("(a) share of the classification loss per IoU bin", fontsize=9)
    weighted = _numpy(first.cls_weight) * _numpy(first.cls_loss)
    box_plot_by_bin(ax_box, np.maximum(weighted, 1e-8), bins, labels,
                    ylabel="weighted classification loss per positive", log=True)
    ax_box.set_xlabel("IoU of the predicted box with its GT")
    ax_box.set_title(f"(b) {first_name}: per-sample weighted loss", fontsize=9)

    curves = {
        "exp(-m_cls), the sample's own": _numpy(first.cls_weight_own),
        "cls weight applied (batch-averaged m_cls)": _numpy(first.cls_weight),
        "reg weight exp(-m_reg)": _numpy(first.reg_weight),
    }
    x = np.arange(num_bins)
    for i, (name, values) in enumerate(curves.items()):
        mean = np.array([values[bins == b].mean() if np.any(bins == b) else np.nan for b in range(num_bins)])
        std = np.array([values[bins == b].std() if np.any(bins == b) else np.nan for b in range(num_bins)])
        ax_weight.errorbar(x + (i - 1) * 0.08, mean, yerr=std, marker="o", capsize=3, label=name, linewidth=1)
    ax_weight.set_xticks(x, labels, fontsize=8)
    ax_weight.set_xlabel("IoU of the predicted box with its GT")
    ax_weight.set_ylabel("weight (mean ± std over the bin)")
    ax_weight.set_title(f"(c) {first_name}: SWN weights per IoU bin", fontsize=9)
    ax_weight.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def input_sweeps(swn, samples: SWNSamples, steps: int = 50) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """For each SWN input, ``(values (S,), m (S, 2))``: the SWN's output along a sweep of that input
    (losses from 0 to their maximum over ``samples``, IoU and probability over [0, 1]) with the
    other inputs at their medians (:func:`swn.analysis.sweep_swn_input`)."""
    totals = {"cls_loss": samples.cls_loss, "reg_loss": samples.reg_loss.sum(dim=1)}
    sweeps = {}
    for name in swn_input_names:
        high = float(totals[name].max()) if name in totals else 1.0
        values = torch.linspace(0.0, max(high, 1e-6), steps)
        sweeps[name] = (values.numpy(), sweep_swn_input(swn, samples, name, values).cpu().numpy())
    return sweeps


def weight_vs_inputs_figure(samples: SWNSamples, sweeps: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                            form: str = "exp(-m)", title: str = "") -> Figure:
    """2 x 4 panels: the SWN's per-sample classification weight ``w(m_cls)`` (top) and box-loss
    weight ``w(m_reg)`` (bottom) of the positives against each of its four inputs (points), with
    the sweep of that input, the others at their medians (line, from :func:`input_sweeps`). The
    classification weight applied in training (after averaging m_cls over the batch) is the
    dotted line."""
    inputs = {
        "cls_loss": _numpy(samples.cls_loss),
        "reg_loss": _numpy(samples.reg_loss).sum(axis=1),
        "iou": _numpy(samples.iou),
        "prob": _numpy(samples.prob),
    }
    weights = (_numpy(samples.cls_weight_own), _numpy(samples.reg_weight))
    applied = _numpy(samples.cls_weight)
    fig = Figure(figsize=(16, 7))
    axes = fig.subplots(2, 4, sharey="row")
    for col, name in enumerate(swn_input_names):
        values, m = sweeps[name]
        swept = sample_weights(torch.as_tensor(m), form).numpy()
        for row, task in enumerate(("cls", "reg")):
            ax = axes[row, col]
            ax.scatter(inputs[name], weights[row], s=5, alpha=0.35, linewidths=0, label="positive anchors")
            ax.plot(values, swept[:, row], color="C3", linewidth=1.8, label="sweep, other inputs at median")
            if task == "cls":
                ax.axhline(applied.mean(), color="k", linestyle=":", linewidth=1,
                           label="cls weight applied (batch-averaged m_cls), mean")
            ax.set_xlabel(INPUT_LABELS[name], fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{form.replace('m', 'm_' + task)}", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
