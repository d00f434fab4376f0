"""swn.network and swn.loss on small, hand-computed cases (numbers worked out in the comments)."""
import math

import pytest
import torch

from swn.loss import average_m, sample_weights, swn_regulariser, weighted_sum
from swn.weighting import SWNConfig
from swn.network import SampleWeightingNetwork, relu_mlp_of_scalar

LN2 = math.log(2.0)


def _inputs(num=5, num_tasks=2, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    inputs = [
        scale * torch.rand(num, generator=g),  # loss_cls
        scale * torch.rand(num, 4, generator=g),  # loss_reg
        torch.rand(num, generator=g),  # iou
        torch.rand(num, generator=g),  # prob
    ]
    if num_tasks == 3:
        inputs.append(scale * torch.rand(num, generator=g))  # loss_mask
    return inputs


def _last_linears(net):
    return [net.head[-1]] if net.shared_head else [head[-1] for head in net.heads]


# ---------------------------------------------------------------- network


@pytest.mark.parametrize("num_tasks", [2, 3])
@pytest.mark.parametrize("shared_head", [True, False])
@pytest.mark.parametrize("num", [5, 0])
def test_output_shape(num_tasks, shared_head, num):
    net = SampleWeightingNetwork(num_tasks=num_tasks, embed_dim=16, shared_head=shared_head)
    m = net(*_inputs(num, num_tasks))
    assert m.shape == (num, num_tasks) and torch.isfinite(m).all()
    assert len(net.embeddings) == 4 + (num_tasks == 3)
    if not shared_head:
        assert len(net.heads) == num_tasks and all(h[-1].out_features == 1 for h in net.heads)


@pytest.mark.parametrize("num_tasks", [2, 3])
@pytest.mark.parametrize("shared_head", [True, False])
def test_init_gives_unit_weights(num_tasks, shared_head):
    torch.manual_seed(0)
    net = SampleWeightingNetwork(num_tasks=num_tasks, shared_head=shared_head)
    for module in net.modules():
        if isinstance(module, torch.nn.Linear):
            assert module.weight.std() < 2e-4 and (module.bias == 0).all()
    m = net(*_inputs(64, num_tasks, scale=10.0))
    assert m.abs().max() < 1e-6
    assert (sample_weights(m) - 1).abs().max() < 1e-3


@pytest.mark.parametrize("shared_head", [True, False])
def test_clamp(shared_head):
    net = SampleWeightingNetwork(num_tasks=3, shared_head=shared_head, clamp=2.0)
    big = torch.tensor([10.0, -10.0, 0.5])  # forced head outputs (the weights are ~0)
    with torch.no_grad():
        if shared_head:
            net.head[-1].bias.copy_(big)
        else:
            for head, value in zip(net.heads, big):
                head[-1].bias.fill_(value)
    m = net(*_inputs(4, 3))
    assert (m[:, 0] == 2.0).all() and (m[:, 1] == -2.0).all()
    torch.testing.assert_close(m[:, 2], torch.full((4,), 0.5), atol=1e-5, rtol=0)  # inside: untouched

    for off in (None, 0):
        net.clamp = SampleWeightingNetwork(clamp=off).clamp
        assert (net(*_inputs(4, 3))[:, 0] > 9.9).all()


def test_separate_heads_are_independent():
    net = SampleWeightingNetwork(shared_head=False)
    inputs = _inputs(3)
    before = net(*inputs)
    with torch.no_grad():
        net.heads[1][-1].bias.fill_(1.0)
    after = net(*inputs)
    assert torch.equal(after[:, 0], before[:, 0])
    torch.testing.assert_close(after[:, 1], before[:, 1] + 1.0)


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_inputs_are_detached(num_tasks):
    torch.manual_seed(0)
    net = SampleWeightingNetwork(num_tasks=num_tasks, init_std=0.1)
    detector = torch.rand(6, requires_grad=True)  # stands in for the detector's parameters
    loss_cls = 2.0 * detector
    loss_reg = detector[:, None].expand(6, 4) ** 2
    iou, prob = detector.sigmoid(), detector.tanh()
    extra = [detector + 1.0] if num_tasks == 3 else []
    m = net(loss_cls, loss_reg, iou, prob, *extra)
    assert m.requires_grad
    m.sum().backward(retain_graph=True)
    assert detector.grad is None
    assert all(p.grad is not None for p in net.parameters())
    assert _last_linears(net)[0].bias.grad.abs().sum() > 0

    # Through the weighted loss the detector gets exactly w(m) * dL/dx and nothing via m.
    weighted = weighted_sum(loss_cls, sample_weights(m[:, 0]))
    weighted.backward()
    torch.testing.assert_close(detector.grad, 2.0 * torch.exp(-m[:, 0].detach()))


def test_bad_inputs_raise():
    net2, net3 = SampleWeightingNetwork(num_tasks=2), SampleWeightingNetwork(num_tasks=3)
    cls, reg, iou, prob = _inputs(5)
    with pytest.raises(ValueError, match="loss_reg"):
        net2(cls, reg[:, 0], iou, prob)  # loss_reg must be (S, 4)
    with pytest.raises(ValueError, match="expected"):
        net2(cls, reg, iou[:, None], prob)
    with pytest.raises(ValueError, match="expected"):
        net2(cls, reg, iou, prob[:4])  # S mismatch
    with pytest.raises(ValueError, match="expected"):
        net2(cls.sum(), reg, iou, prob)  # 0-dim
    with pytest.raises(ValueError, match="loss_mask is required"):
        net3(cls, reg, iou, prob)
    with pytest.raises(ValueError, match="only accepted"):
        net2(cls, reg, iou, prob, cls)
    with pytest.raises(ValueError, match="expected"):
        net3(cls, reg, iou, prob, cls[:, None])
    with pytest.raises(ValueError, match="num_tasks"):
        SampleWeightingNetwork(num_tasks=4)


# ---------------------------------------------------------------- loss


def test_sample_weights_forms():
    m = torch.tensor([0.0, LN2])
    torch.testing.assert_close(sample_weights(m), torch.tensor([1.0, 0.5]))  # exp(-m)
    torch.testing.assert_close(sample_weights(m, "exp(-2m)"), torch.tensor([1.0, 0.25]))  # exp(-2m)
    with pytest.raises(ValueError, match="form"):
        sample_weights(m, "exp(-3m)")


def _uncertainty_weighted(loss, m, lam=0.5, form="exp(-m)"):
    """One task through the API the heads use: weights of per-sample m ("none": no averaging)."""
    pos = torch.ones(m.shape[0], dtype=torch.bool)
    w = SWNConfig(lam=lam, form=form, cls_average="none", weight_reg=False)
    weights = w.weights(torch.stack([m, torch.zeros_like(m)], dim=1), pos, loss, loss)
    return weighted_sum(loss, weights.cls), w.regulariser(weights, pos)


def test_uncertainty_weighted_loss_hand_computed():
    loss = torch.tensor([2.0, 4.0, 6.0])
    m = torch.tensor([0.0, LN2, LN2])
    # exp(-m) = [1, .5, .5] -> 2 + 2 + 3 = 7; regulariser 0.5 * (2 ln2 / 3) = ln2 / 3
    weighted, reg = _uncertainty_weighted(loss, m)
    torch.testing.assert_close(weighted, torch.tensor(7.0))
    torch.testing.assert_close(reg, torch.tensor(LN2 / 3))
    # exp(-2m) = [1, .25, .25] -> 2 + 1 + 1.5 = 4.5; lam 1 -> regulariser 2 ln2 / 3
    weighted, reg = _uncertainty_weighted(loss, m, lam=1.0, form="exp(-2m)")
    torch.testing.assert_close(weighted, torch.tensor(4.5))
    torch.testing.assert_close(reg, torch.tensor(2 * LN2 / 3))
    # (S, 4) per-coordinate loss: row sums [4, 8] weighted [1, .5] -> 4 + 4 = 8
    torch.testing.assert_close(weighted_sum(torch.tensor([[1.0] * 4, [2.0] * 4]), sample_weights(m[:2])), torch.tensor(8.0))
    with pytest.raises(ValueError, match="expected"):
        weighted_sum(loss, m[:2])


def test_uncertainty_weighted_loss_empty():
    m = torch.zeros(0, requires_grad=True)
    weighted, reg = _uncertainty_weighted(torch.zeros(0), m)
    assert weighted.item() == 0.0 and reg.item() == 0.0
    (weighted + reg).backward()
    assert m.grad.shape == (0,)


def test_uncertainty_weighted_loss_gradient():
    # d/dm [exp(-m) L + 0.5 m / S] at m = 0, L = [2, 4], S = 2: -L + 0.25 = [-1.75, -3.75]
    m = torch.zeros(2, requires_grad=True)
    weighted, reg = _uncertainty_weighted(torch.tensor([2.0, 4.0]), m)
    (weighted + reg).backward()
    torch.testing.assert_close(m.grad, torch.tensor([-1.75, -3.75]))


M_CLS = torch.tensor([1.0, 2.0, 3.0, 6.0])
POS = torch.tensor([True, False, True, False])


def test_average_m_hand_computed():
    # all: mean(1, 2, 3, 6) = 3
    torch.testing.assert_close(average_m(M_CLS, None, "all"), torch.full((4,), 3.0))
    # pos_neg: positives mean(1, 3) = 2, negatives mean(2, 6) = 4
    torch.testing.assert_close(average_m(M_CLS, POS, "pos_neg"), torch.tensor([2.0, 4.0, 2.0, 4.0]))
    # no negatives: everything is the positive mean, no NaN from the empty group
    torch.testing.assert_close(average_m(M_CLS, torch.ones(4, dtype=torch.bool), "pos_neg"), torch.full((4,), 3.0))
    torch.testing.assert_close(average_m(M_CLS, torch.zeros(4, dtype=torch.bool), "pos_neg"), torch.full((4,), 3.0))
    assert average_m(M_CLS, None, "none") is M_CLS
    for rule in ("all", "pos_neg"):
        assert average_m(torch.zeros(0), torch.zeros(0, dtype=torch.bool), rule).shape == (0,)


def test_average_m_bad_arguments():
    with pytest.raises(ValueError, match="rule"):
        average_m(M_CLS, POS, "pos")
    with pytest.raises(ValueError, match="pos_mask"):
        average_m(M_CLS, None, "pos_neg")
    with pytest.raises(ValueError, match="pos_mask"):
        average_m(M_CLS, POS.float(), "pos_neg")


def test_average_m_gradient_flows_through_the_mean():
    c = torch.tensor([1.0, 10.0, 100.0, 1000.0])
    m = M_CLS.clone().requires_grad_()
    (average_m(m, POS, "pos_neg") * c).sum().backward()
    # positives (0, 2) share d/dm = (1 + 100) / 2, negatives (1, 3) share (10 + 1000) / 2
    torch.testing.assert_close(m.grad, torch.tensor([50.5, 505.0, 50.5, 505.0]))

    m.grad = None
    (average_m(m, POS, "all") * c).sum().backward()
    torch.testing.assert_close(m.grad, torch.full((4,), 1111.0 / 4))

    m.grad = None
    (average_m(m, torch.ones(4, dtype=torch.bool), "pos_neg") * c).sum().backward()
    torch.testing.assert_close(m.grad, torch.full((4,), 1111.0 / 4))  # empty negatives: no NaN


def _m(num_tasks):
    # columns m_cls, m_reg, m_mask; positives are rows 0 and 2
    m = torch.tensor([[1.0, 0.5, 0.2], [2.0, 1.0, 7.0], [3.0, 0.7, 0.4], [6.0, 9.0, 8.0]])
    return m[:, :num_tasks].clone().requires_grad_()


def _regulariser(m, pos, cls_average, lam=0.5):
    """SWNConfig.regulariser of an (S, T) network output, as the heads compute it."""
    w = SWNConfig(cls_average=cls_average, lam=lam)
    mask_loss = m.new_zeros(int(pos.sum())) if m.shape[1] == 3 else None
    return w.regulariser(w.weights(m, pos, m[:, 0], m[pos, 1], mask_loss), pos)


def test_regulariser_hand_computed():
    # dense: 0.5 * mean(1, 2, 3, 6) + 0.5 * mean(0.5, 0.7) = 0.5 * (3 + 0.6) = 1.8
    torch.testing.assert_close(_regulariser(_m(2), POS, "all"), torch.tensor(1.8))
    # RoI: 0.5 * (mean_pos cls 2 + mean_neg cls 4 + mean_pos reg 0.6) = 3.3
    torch.testing.assert_close(_regulariser(_m(2), POS, "pos_neg"), torch.tensor(3.3))
    # Mask R-CNN adds 0.5 * mean_pos mask (0.2, 0.4) = 0.15 -> 3.45
    torch.testing.assert_close(_regulariser(_m(3), POS, "pos_neg"), torch.tensor(3.45))
    # hand-built groups, lam = 1: mean(1, 3) + mean(9) = 11
    torch.testing.assert_close(swn_regulariser([M_CLS[POS], torch.tensor([9.0])], lam=1.0), torch.tensor(11.0))
    with pytest.raises(ValueError, match="group"):
        swn_regulariser([])
    # per-sample m_cls ("none") is regularised over all samples, as "all": 1.8
    torch.testing.assert_close(_regulariser(_m(2), POS, "none"), torch.tensor(1.8))
    with pytest.raises(ValueError, match="cls_average"):
        SWNConfig(cls_average="neg")


def test_regulariser_without_positives():
    m = _m(3)
    reg = _regulariser(m, torch.zeros(4, dtype=torch.bool), "pos_neg")
    # only the negative m_cls group is non-empty: 0.5 * mean(1, 2, 3, 6) = 1.5
    torch.testing.assert_close(reg, torch.tensor(1.5))
    reg.backward()
    expected = torch.zeros(4, 3)
    expected[:, 0] = 0.5 / 4
    torch.testing.assert_close(m.grad, expected)


# ---------------------------------------------------------------- fast path (a speed switch)


def _plain_relu_mlp(x, weights, biases):
    h = x[:, None]
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = torch.nn.functional.linear(h, w, b)
        if i < len(weights) - 1:
            h = torch.relu(h)
    return h


def _values_and_grads(fn, params, upstream):
    out = fn()
    return out.detach(), torch.autograd.grad((out * upstream).sum(), params)


@pytest.mark.parametrize("zero_biases", [True, False])
def test_relu_mlp_of_scalar_equals_the_plain_mlp(zero_biases):
    g = torch.Generator().manual_seed(0)
    sizes = [1, 16, 16, 8, 3]
    weights = [torch.randn(o, i, generator=g).requires_grad_() for i, o in zip(sizes[:-1], sizes[1:])]
    biases = [(torch.zeros(o) if zero_biases else torch.randn(o, generator=g)).requires_grad_() for o in sizes[1:]]
    # x = 0 exactly: with zero biases every ReLU input is exactly 0 there, where relu's gradient is 0
    x = torch.cat([torch.linspace(-3.0, 3.0, 1001), torch.zeros(5), torch.full((3,), 2.5)])
    upstream = torch.randn(x.numel(), 3, generator=g)
    params = weights + biases
    plain = _values_and_grads(lambda: _plain_relu_mlp(x, weights, biases), params, upstream)
    fast = _values_and_grads(lambda: relu_mlp_of_scalar(x, weights, biases, max_pieces=10**6), params, upstream)
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(fast[1], plain[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())

    assert relu_mlp_of_scalar(x, weights, biases, max_pieces=2) is None  # too many pieces: caller falls back
    empty = relu_mlp_of_scalar(x[:0], weights, biases, max_pieces=10)
    assert empty.shape == (0, 3)
    with pytest.raises(ValueError, match="in_1 = 1"):
        relu_mlp_of_scalar(x, weights[1:], biases[1:], max_pieces=10)


@pytest.mark.parametrize("num_tasks", [2, 3])
@pytest.mark.parametrize("shared_head", [True, False])
@pytest.mark.parametrize("trained", [False, True])
def test_fast_path_equals_the_plain_evaluation(num_tasks, shared_head, trained, monkeypatch):
    """Dense-head inputs (95 % negatives: regression loss, IoU, prob, mask loss all 0; some
    classification losses exactly 0): the same m and gradients with and without the fast path,
    at initialisation (zero biases: the ReLU kinks sit at 0) and with trained-like weights."""
    import swn.fast_path

    torch.manual_seed(0)
    net = SampleWeightingNetwork(num_tasks=num_tasks, shared_head=shared_head, init_std=0.3 if trained else 1e-4)
    if trained:
        for module in net.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.bias, std=0.3)
    num = 3000
    inputs = _inputs(num, num_tasks, seed=1, scale=3.0)
    g = torch.Generator().manual_seed(2)
    negative = torch.rand(num, generator=g) < 0.95
    for x in inputs[1:]:
        x[negative] = 0.0
    inputs[0][:20] = 0.0
    upstream = torch.randn(num, num_tasks, generator=g)
    params = list(net.parameters())

    calls = []
    original = swn.fast_path.relu_mlp_of_scalar
    monkeypatch.setattr(
        swn.fast_path, "relu_mlp_of_scalar", lambda *a, **k: calls.append(original(*a, **k)) or calls[-1]
    )
    net.fast_path = True
    fast = _values_and_grads(lambda: net(*inputs), params, upstream)
    assert calls and all(c is not None for c in calls)  # the fast path was taken
    net.fast_path = False
    plain = _values_and_grads(lambda: net(*inputs), params, upstream)
    assert len(calls) == (1 if shared_head else num_tasks)
    # float32 rounding: both are within ~5e-6 of a float64 evaluation of these m in [-2, 2]
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-5 * plain[0].abs().max().item() + 1e-12)
    for a, b in zip(fast[1], plain[1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item() + 1e-12)


def test_fast_path_falls_back_when_most_samples_are_positives(monkeypatch):
    """The fast path is taken when at least half the samples are negatives (inputs besides the
    classification loss all 0), and skipped otherwise; both give the plain result."""
    import swn.fast_path as network

    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return relu_mlp_of_scalar(*args, **kwargs)

    monkeypatch.setattr(network, "relu_mlp_of_scalar", counting)
    torch.manual_seed(0)
    net = SampleWeightingNetwork(init_std=0.3)

    def both(inputs):
        net.fast_path = True
        fast = net(*inputs)
        net.fast_path = False
        return fast, net(*inputs)

    inputs = _inputs(200, seed=3)  # every row has a non-zero regression loss, IoU and prob
    fast, plain = both(inputs)
    assert calls == [] and torch.equal(fast, plain)  # most are positives: the plain path only

    negative = torch.arange(200) % 10 != 0  # 90 % negatives: the fast path runs
    for x in inputs[1:]:
        x[negative] = 0.0
    fast, plain = both(inputs)
    assert len(calls) == 1
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)

    calls.clear()
    negative = torch.arange(200) % 2 == 0  # exactly half: still fast; one positive more: plain
    inputs = _inputs(200, seed=5)
    for x in inputs[1:]:
        x[negative] = 0.0
    both(inputs)
    assert len(calls) == 1
    calls.clear()
    inputs[1][0] = 0.5  # sample 0 becomes a positive: 101 of 200
    both(inputs)
    assert calls == []


def test_fast_path_under_autocast():
    """As under AMP on a GPU (here CPU autocast to bfloat16): the negatives are computed in float32,
    the positives as autocast makes them, and both paths agree to bfloat16 precision."""
    torch.manual_seed(0)
    net = SampleWeightingNetwork(init_std=0.3)
    num = 2000
    inputs = _inputs(num, seed=4, scale=3.0)
    negative = torch.arange(num) % 10 != 0
    for x in inputs[1:]:
        x[negative] = 0.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = net(*inputs)
        net.fast_path = False
        plain = net(*inputs)
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    torch.testing.assert_close(fast, plain.float(), rtol=0.05, atol=0.05)
    fast[:, 0].mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_former_name_of_the_switches_still_works_and_warns():
    from swn import SWNConfig, SWNWeighting

    with pytest.warns(DeprecationWarning, match="SWNWeighting is now swn.SWNConfig"):
        w = SWNWeighting(lam=0.3, cls_average="pos_neg")
    assert isinstance(w, SWNConfig) and w.lam == 0.3 and w.cls_average == "pos_neg"
