"""clean_anchors.cleanliness against hand-computed cases (numbers worked out in the comments)."""
import math

import pytest
import torch
from fvcore.nn import sigmoid_focal_loss

from clean_anchors.cleanliness import (
    reweight,
    rescale_to_sum,
    soft_focal_loss,
    soft_labels,
    topn_candidates,
)


def test_topn_candidates_anchor_in_two_lists_goes_to_higher_iou():
    iou = torch.tensor([[0.9, 0.1, 0.5, 0.0], [0.8, 0.7, 0.0, 0.2]])
    # GT0's top-2: anchors 0, 2; GT1's top-2: anchors 0, 1; anchor 0 has 0.9 with GT0 > 0.8 with GT1
    for matching in ("all_gts", "own_lists"):
        matched, num_lists = topn_candidates(iou, 2, matching)
        assert matched.tolist() == [0, 1, 0, -1]
        assert num_lists.tolist() == [2, 1, 1, 0]  # anchor 0 is the pair (GT0, 0) and (GT1, 0)


def test_topn_candidates_matching_all_gts_vs_own_lists():
    iou = torch.tensor([[0.3, 0.2, 0.1], [0.35, 0.9, 0.8]])
    # GT0's top-1 list: anchor 0; GT1's: anchor 1. Anchor 0 is only in GT0's list, but its IoU with
    # GT1 (0.35) is higher: the authors' MatcherTopN (argmax over all GTs) gives it GT1.
    assert topn_candidates(iou, 1).matched.tolist() == [1, 1, -1]
    assert topn_candidates(iou, 1, "all_gts").matched.tolist() == [1, 1, -1]
    assert topn_candidates(iou, 1, "own_lists").matched.tolist() == [0, 1, -1]
    assert topn_candidates(iou, 1).num_lists.tolist() == [1, 1, 0]
    # anchor 0 is in the top-1 lists of GT0 (0.5) and GT1 (0.4); its best IoU is with GT2 (0.6),
    # whose list holds anchor 3 only: the authors match it to GT2 all the same.
    iou = torch.tensor([[0.5, 0.1, 0.0, 0.0], [0.4, 0.0, 0.3, 0.0], [0.6, 0.0, 0.0, 0.9]])
    assert topn_candidates(iou, 1, "all_gts").matched.tolist() == [2, -1, -1, 2]
    assert topn_candidates(iou, 1, "own_lists").matched.tolist() == [0, -1, -1, 2]
    assert topn_candidates(iou, 1).num_lists.tolist() == [2, 0, 0, 1]
    with pytest.raises(ValueError, match="all_gts"):
        topn_candidates(iou, 1, "best")


def test_topn_candidates_edge_cases():
    assert topn_candidates(torch.zeros(0, 5), 3).matched.tolist() == [-1] * 5
    assert topn_candidates(torch.zeros(0, 5), 3).num_lists.tolist() == [0] * 5
    assert topn_candidates(torch.tensor([[0.1, 0.0, 0.3]]), 5).matched.tolist() == [0, 0, 0]  # n > A
    assert topn_candidates(torch.zeros(2, 0), 3).matched.shape == (0,)
    # no IoU threshold: an anchor with IoU 0 can be a candidate
    assert topn_candidates(torch.tensor([[0.0, 0.0]]), 1).matched.tolist().count(0) == 1


def test_soft_labels_and_weights_count_an_anchor_once_per_list():
    """The authors' pair list: an anchor in two top-N lists counts twice in every per-image mean
    (normalisation, the mean(loc) floor, the re-weighting normalisation); min and max do not move."""
    loc = torch.tensor([0.2, 0.4, 0.6])
    cls = torch.tensor([0.5, 0.5, 0.2])
    counts = torch.tensor([1, 1, 2])
    # as the pairs [0.2, 0.4, 0.6, 0.6] / [0.5, 0.5, 0.2, 0.2]: mean loc 0.45, mean cls 0.35
    pairs = soft_labels(torch.tensor([0.2, 0.4, 0.6, 0.6]), torch.tensor([0.5, 0.5, 0.2, 0.2]), 0.75)
    out = soft_labels(loc, cls, 0.75, counts=counts)
    torch.testing.assert_close(out, pairs[:3])
    # by hand: combined = .75 * loc / .45 + .25 * cls / .35 = [0.69048, 1.02381, 1.14286];
    # rescaled to [0.45, 1]: 0.45 + (c - 0.69048) / 0.45238 * 0.55
    combined = torch.tensor([0.75 * 0.2 / 0.45 + 0.25 * 0.5 / 0.35, 0.75 * 0.4 / 0.45 + 0.25 * 0.5 / 0.35,
                             0.75 * 0.6 / 0.45 + 0.25 * 0.2 / 0.35])
    expected = 0.45 + (combined - combined.min()) / (combined.max() - combined.min()) * 0.55
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, soft_labels(loc, cls, 0.75))  # once per anchor: another floor
    torch.testing.assert_close(soft_labels(loc, cls, 0.75, counts=torch.ones(3, dtype=torch.long)),
                               soft_labels(loc, cls, 0.75))

    r = reweight(loc, cls, 0.75, counts=counts)
    r_pairs = reweight(torch.tensor([0.2, 0.4, 0.6, 0.6]), torch.tensor([0.5, 0.5, 0.2, 0.2]), 0.75)
    torch.testing.assert_close(r, r_pairs[:3])
    # f(loc) = [1.25, 5/3, 2.5], pair mean 1.97917; f(cls) = [2, 2, 1.25], pair mean 1.625
    f_loc, f_cls = torch.tensor([1.25, 5 / 3, 2.5]), torch.tensor([2.0, 2.0, 1.25])
    torch.testing.assert_close(r, 0.75 * f_loc / 1.9791667 + 0.25 * f_cls / 1.625)
    assert float((r * counts).sum() / counts.sum()) == pytest.approx(1.0)  # mean 1 over the pairs


def test_soft_labels_official_hand_computed():
    loc = torch.tensor([0.2, 0.4, 0.6])
    cls = torch.tensor([0.5, 0.5, 0.2])
    # loc / mean = [.5, 1, 1.5], cls / mean = [1.25, 1.25, .5]
    # 0.75 loc + 0.25 cls = [.6875, 1.0625, 1.25] -> min-max to [mean(loc) = .4, 1]
    torch.testing.assert_close(soft_labels(loc, cls, 0.75), torch.tensor([0.4, 0.8, 1.0]))


def test_soft_labels_paper_hand_computed():
    loc = torch.tensor([0.2, 0.4, 0.6])
    cls = torch.tensor([0.5, 0.5, 0.2])
    torch.testing.assert_close(soft_labels(loc, cls, 0.75, mode="paper"), torch.tensor([0.275, 0.425, 0.5]))
    with pytest.raises(ValueError, match="mode"):
        soft_labels(loc, cls, 0.75, mode="papr")


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_soft_labels_degenerate_inputs_are_finite(value):
    full = torch.full((4,), value)
    out = soft_labels(full, full, 0.75)
    assert torch.isfinite(out).all() and (out == 1.0).all()  # max == min: all 1
    assert soft_labels(torch.tensor([0.3]), torch.tensor([0.1]), 0.75).tolist() == [1.0]
    assert soft_labels(torch.zeros(0), torch.zeros(0), 0.75).shape == (0,)


def test_soft_labels_official_range_and_max():
    g = torch.Generator().manual_seed(0)
    loc, cls = torch.rand(50, generator=g), torch.rand(50, generator=g)
    out = soft_labels(loc, cls, 0.75)
    assert out.max().item() == pytest.approx(1.0)
    assert out.min().item() == pytest.approx(loc.mean().item())
    assert ((out >= 0) & (out <= 1)).all()


def test_reweight_hand_computed():
    loc = torch.tensor([0.5, 0.75])  # f = [2, 4] -> / mean 3 = [2/3, 4/3]
    cls = torch.tensor([0.5, 0.0])  # f = [2, 1] -> / mean 1.5 = [4/3, 2/3]
    # r = .75 [2/3, 4/3] + .25 [4/3, 2/3] = [5/6, 7/6] (mean 1 already)
    torch.testing.assert_close(reweight(loc, cls, 0.75), torch.tensor([5 / 6, 7 / 6]))
    # gamma 2: [25/36, 49/36] / mean (74/72) = [50/74, 98/74]
    torch.testing.assert_close(reweight(loc, cls, 0.75, gamma=2.0), torch.tensor([50 / 74, 98 / 74]))


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_reweight_saturated_inputs_are_finite_with_mean_one(value):
    loc = torch.tensor([value, 0.5, 0.2])
    cls = torch.tensor([1.0, value, 0.0])
    r = reweight(loc, cls, 0.75)
    assert torch.isfinite(r).all()
    assert r.mean().item() == pytest.approx(1.0)
    assert reweight(torch.zeros(0), torch.zeros(0), 0.75).shape == (0,)


def test_soft_focal_loss_hand_computed_and_binary_equivalence():
    # x = 0, s = .5, alpha = .5, gamma = 2: two equal terms .5 * .5 * .25 * ln 2
    loss = soft_focal_loss(torch.zeros(1), torch.full((1,), 0.5), alpha=0.5, gamma=2.0)
    assert loss.item() == pytest.approx(2 * 0.5 * 0.5 * 0.25 * math.log(2))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 3, generator=g) * 4
    targets = (torch.rand(64, 3, generator=g) > 0.7).float()
    torch.testing.assert_close(
        soft_focal_loss(logits, targets, alpha=0.25, gamma=2.0),
        sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="none"),
    )


def test_soft_focal_loss_stable_for_extreme_logits():
    logits = torch.tensor([-100.0, 100.0, -100.0, 100.0, 0.0], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, 0.3, 0.7, 1.0])
    loss = soft_focal_loss(logits, targets, alpha=0.5, gamma=2.0)
    assert torch.isfinite(loss).all()
    assert loss[0].item() == pytest.approx(0.5 * 100.0)  # -alpha log sigmoid(-100) = alpha * 100
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_rescale_to_sum_keeps_total_and_passes_gradient_through_weighted():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    out = rescale_to_sum(w, torch.tensor([3.0, 3.0]))
    torch.testing.assert_close(out, torch.tensor([2.0, 4.0]))
    out.sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([2.0, 2.0]))  # the factor is a constant


def test_topn_candidates_by_chunks_is_bit_identical():
    """Chunks of ground truths give exactly the single-matrix result, ties included (duplicate
    ground truths; tiny boxes whose top-n lists are filled with zero-IoU anchors)."""
    from clean_anchors.cleanliness import topn_candidates_by_chunks
    from clean_anchors.scores import box_pairwise_iou

    g = torch.Generator().manual_seed(0)

    def boxes(n, low, high, size=200.0):
        side = torch.empty(n, 2).uniform_(low, high, generator=g)
        corner = torch.rand(n, 2, generator=g) * (size - side)
        return torch.cat([corner, corner + side], dim=1)

    for _ in range(4):
        gt, anchors = boxes(40, 0.5, 30.0), boxes(300, 2.0, 60.0).round()
        gt[10:20] = gt[0]
        for n in (1, 9, 1000):
            for max_elements in (1, 300, 7 * 300 + 5, 10**9):  # 1 box per chunk ... all in one
                for matching in ("all_gts", "own_lists"):
                    expected = topn_candidates(box_pairwise_iou(gt, anchors), n, matching)
                    got = topn_candidates_by_chunks(
                        gt, anchors, n, box_pairwise_iou, matching=matching, max_elements=max_elements
                    )
                    assert torch.equal(got.matched, expected.matched)
                    assert torch.equal(got.num_lists, expected.num_lists)
    for empty in (topn_candidates_by_chunks(gt[:0], anchors, 5, box_pairwise_iou, max_elements=1),
                  topn_candidates_by_chunks(gt, anchors, 0, box_pairwise_iou, max_elements=1)):
        assert empty.matched.tolist() == [-1] * 300 and empty.num_lists.tolist() == [0] * 300
