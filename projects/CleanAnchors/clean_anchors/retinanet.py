"""RetinaNet trained with cleanliness soft labels and re-weighting (noisy anchors, CVPR 2020)."""
import functools

import torch
from detectron2.layers import cat
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage
from fvcore.nn import sigmoid_focal_loss_jit

from detkit.modeling.dense_labels import NORMALIZERS, dense_labels
from detkit.modeling.loss_normalizer import GlobalLossNormalizer

from .cleanliness import at_least_float32, soft_focal_loss
from .scores import CleanlinessConfig, candidate_scores, log_cleanliness, match_candidates, per_anchor_box_loss

__all__ = ["CleanAnchorsRetinaNet"]


class CleanAnchorsRetinaNet(GlobalLossNormalizer, RetinaNet):
    """Detectron2's RetinaNet with the losses of "Learning from Noisy Anchors" (Li et al.).

    Candidates are the ``topn`` anchors of each ground truth (no IoU threshold, no ignore band);
    their classification targets are cleanliness soft labels and both losses are re-weighted by
    ``r``. Inference is unchanged: a checkpoint loads into stock ``RetinaNet``.

    With ``assigner="iou"``, ``soft_labels=False``, ``reweighting=False`` and
    ``normalizer="ema"`` the losses are exactly those of stock RetinaNet (with the
    same normaliser: :class:`~detkit.modeling.GlobalNormalizerRetinaNet` or, with
    ``global_loss_normalizer=False``, ``RetinaNet``).

    Args (besides RetinaNet's; set ``focal_loss_alpha=0.5`` as the reference configs do):
        topn: candidates per ground truth (paper's N, 30).
        assigner: ``"topn"`` (the method) or ``"iou"`` (RetinaNet's ``anchor_matcher``, 0.4/0.5).
        cleanliness: a :class:`CleanlinessConfig` (alpha, gamma, on/off switches, soft-label mode,
            candidate matching and multiplicity, statistics per image or per batch, loss-sum
            rescaling).
        normalizer: the loss normaliser (:func:`detkit.modeling.dense_labels.dense_labels`):
            ``"ema_raw"`` (the authors' code: the EMA, initial 100 and momentum 0.9, of the positive
            count, 0 for a batch without positives; the losses are divided by ``max(1, EMA)``),
            ``"ema"`` (Detectron2's RetinaNet: the EMA of ``max(count, 1)``) or ``"batch"``.
        global_loss_normalizer: count the positives of all DDP processes (default; exactly
            Detectron2's per-process EMA in one process), see :mod:`detkit.modeling.loss_normalizer`.
    """

    def __init__(
        self,
        *,
        topn: int = 30,
        assigner: str = "topn",
        cleanliness: CleanlinessConfig = None,
        normalizer: str = "ema_raw",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if assigner not in ("topn", "iou"):
            raise ValueError(f"CleanAnchorsRetinaNet: assigner must be 'topn' or 'iou', got {assigner!r}")
        if isinstance(topn, bool) or not isinstance(topn, int) or topn < 1:
            raise ValueError(
                f"CleanAnchorsRetinaNet: topn (model.topn) must be a whole number >= 1, got {topn!r}: it is how many "
                "anchors of highest IoU become each ground truth's candidates (positives); 0 would train "
                "without any positive."
            )
        if normalizer not in NORMALIZERS:
            raise ValueError(f"CleanAnchorsRetinaNet: normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
        self.topn = topn
        self.assigner = assigner
        self.cleanliness = cleanliness if cleanliness is not None else CleanlinessConfig()
        self.normalizer = normalizer

    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        anchors = self.anchor_generator(features)
        if self.assigner == "topn":
            gt_labels, gt_boxes, num_lists = self.label_candidates(anchors, gt_instances)
        else:
            (gt_labels, gt_boxes), num_lists = self.label_anchors(anchors, gt_instances), None
        return self.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, num_lists)

    @torch.no_grad()
    def label_candidates(self, anchors, gt_instances):
        """Like ``label_anchors``, with the top-N candidates of each ground truth as foreground and
        every other anchor as background (label K); no anchor is ignored.

        Returns:
            list[Tensor] (R,) labels in {0..K}, list[Tensor] (R, 4) matched boxes (undefined for
            background), list[Tensor] (R,) in how many top-N lists each anchor is, one per image;
            R = anchors over all levels.
        """
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes, num_lists = [], [], []
        num_candidates, num_gt = 0, 0
        for gt in gt_instances:
            matched, lists = match_candidates(gt.gt_boxes.tensor, anchors.tensor, self.topn, self.cleanliness)
            num_lists.append(lists)
            fg = matched >= 0
            if len(gt) > 0:
                index = matched.clamp(min=0)
                labels = torch.where(fg, gt.gt_classes[index], torch.full_like(index, self.num_classes))
                boxes = gt.gt_boxes.tensor[index]
            else:
                labels = torch.full_like(matched, self.num_classes)
                boxes = torch.zeros_like(anchors.tensor)
            gt_labels.append(labels)
            matched_gt_boxes.append(boxes)
            num_candidates += int(fg.sum())
            num_gt += len(gt)
        get_event_storage().put_scalar("clean_anchors/candidates_per_gt", num_candidates / max(num_gt, 1))
        return gt_labels, matched_gt_boxes, num_lists

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, num_lists=None):
        """
        Args, as ``RetinaNet.losses``: anchors list[Boxes] per level; pred_logits /
        pred_anchor_deltas list of (N, Hi*Wi*A, K or 4) per level; gt_labels list of N (R,) in
        {-1, 0..K}; gt_boxes list of N (R, 4); plus num_lists: list of N (R,) top-N list counts
        from :meth:`label_candidates` (None: each positive counts once in the statistics).

        Returns:
            {"loss_cls", "loss_box_reg"}, each divided by the loss normaliser (``normalizer``).
        """
        num_images = len(gt_labels)
        logits = cat(pred_logits, dim=1)  # (N, R, K)
        gt_labels, valid_mask, pos_mask, targets, normalizer = dense_labels(
            self, gt_labels, self.num_classes, logits.dtype, normalizer=self.normalizer
        )
        cfg = self.cleanliness
        if not (cfg.soft_labels or cfg.reweighting):
            # RetinaNet.losses line for line, so that the switched-off method is bit-identical.
            loss_cls = sigmoid_focal_loss_jit(
                logits[valid_mask], targets[valid_mask],
                alpha=self.focal_loss_alpha, gamma=self.focal_loss_gamma, reduction="sum",
            )
            loss_box_reg = _dense_box_regression_loss(
                anchors, self.box2box_transform, pred_anchor_deltas, gt_boxes, pos_mask,
                box_reg_loss_type=self.box_reg_loss_type, smooth_l1_beta=self.smooth_l1_beta,
            )
            return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}

        # Under AMP the head's outputs are half precision: the soft targets, focal losses and their
        # (re-weighted) sums are computed in float32 (no-ops in float32 training).
        logits, targets = at_least_float32(logits, targets)
        deltas = cat(pred_anchor_deltas, dim=1)  # (N, R, 4)
        pos_anchors = Boxes.cat(anchors).tensor.expand(num_images, -1, -1)[pos_mask]  # (P, 4)
        pos_gt_boxes = torch.stack(gt_boxes)[pos_mask]  # (P, 4)
        pos_labels = gt_labels[pos_mask]  # (P,)
        scores = candidate_scores(
            self.box2box_transform,
            anchors=pos_anchors,
            pred_deltas=deltas[pos_mask],
            gt_boxes=pos_gt_boxes,
            gt_class_logits=logits[pos_mask].gather(1, pos_labels[:, None]).squeeze(1),
            image_index=pos_mask.nonzero()[:, 0],
            cfg=cfg,
            num_lists=None if num_lists is None else torch.stack(num_lists)[pos_mask],
        )
        log_cleanliness(scores)

        if cfg.soft_labels:
            pos_targets = targets[pos_mask]
            pos_targets.scatter_(1, pos_labels[:, None], scores.soft_labels[:, None].to(logits.dtype))
            targets[pos_mask] = pos_targets
            focal = soft_focal_loss
        else:
            focal = functools.partial(sigmoid_focal_loss_jit, reduction="none")
        cls_loss = focal(
            logits[valid_mask], targets[valid_mask], alpha=self.focal_loss_alpha, gamma=self.focal_loss_gamma
        ).sum(dim=1)  # (V,) summed over classes
        box_loss = per_anchor_box_loss(
            self.box2box_transform, pos_anchors, deltas[pos_mask], pos_gt_boxes,
            self.box_reg_loss_type, self.smooth_l1_beta,
        )  # (P,)
        if cfg.reweighting:
            r_valid = torch.ones_like(cls_loss)  # background anchors keep weight 1
            r_valid[pos_mask[valid_mask]] = scores.weights.to(cls_loss.dtype)
            loss_cls = cfg.combine(cls_loss, r_valid)
            loss_box_reg = cfg.combine(box_loss, scores.weights.to(box_loss.dtype))
        else:
            loss_cls, loss_box_reg = cls_loss.sum(), box_loss.sum()
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}
