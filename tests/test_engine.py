import pytest
import torch
from detectron2.utils.events import EventStorage

from detkit.engine import add_gradient_clipping, select_device


def _model_with_grads(scale):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    for p in model.parameters():
        p.grad = torch.full_like(p, scale)
    return model


def test_gradient_clipping_bounds_the_global_norm_and_logs_it():
    model = _model_with_grads(10.0)  # 8 values of 10: global norm sqrt(8) * 10
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = add_gradient_clipping(torch.optim.SGD(model.parameters(), lr=0.5), max_norm=2.0)
    assert isinstance(opt, torch.optim.SGD)
    with EventStorage(0) as storage:
        opt.step()
        logged = storage.history("grad_norm").latest()
    assert logged == pytest.approx(10.0 * 8**0.5)
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert grads.norm().item() == pytest.approx(2.0, rel=1e-5)
    # the step used the clipped gradient: each parameter moved by lr * 2 / sqrt(8)
    for n, p in model.named_parameters():
        torch.testing.assert_close(before[n] - p.detach(), torch.full_like(p, 0.5 * 2.0 / 8**0.5))


def test_gradient_clipping_leaves_small_gradients_alone():
    model = _model_with_grads(0.01)
    opt = add_gradient_clipping(torch.optim.SGD(model.parameters(), lr=1.0), max_norm=2.0)
    opt.step()  # works without an EventStorage too
    assert all(torch.allclose(p.grad, torch.full_like(p, 0.01)) for p in model.parameters())


def test_select_device_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("cuda") == "cpu"
    assert select_device("cuda:1") == "cpu"
    assert select_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("cuda") == "cuda"
