"""ConvNet pieces: the fast CPU pooling matches ATen's bit for bit; the allocator tuning is harmless."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from engine.nets import AvgPool2x2, ConvNet, ConvNetConfig


@pytest.mark.parametrize("shape", [(5, 4, 32, 32), (3, 2, 16, 16), (2, 3, 8, 8), (2, 3, 7, 7), (1, 1, 6, 10)])
def test_pool_equals_aten_forward_backward(shape):
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    ours, theirs = AvgPool2x2()(x), F.avg_pool2d(x, 2)
    assert torch.equal(ours, theirs)
    g = torch.randn_like(theirs)
    assert torch.equal(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(theirs, x, g)[0])


def test_pool_second_order_equals_aten():
    """DC differentiates the parameter gradient again: the pool's double backward must match too."""
    torch.manual_seed(1)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    x = torch.randn(5, 3, 16, 16, requires_grad=True)

    def second(pool):
        h = pool(torch.relu(F.conv2d(x, w, padding=1)))
        gw, = torch.autograd.grad(h.pow(2).sum(), w, create_graph=True)
        return torch.autograd.grad(gw.pow(2).sum(), x)[0]
    assert torch.equal(second(AvgPool2x2()), second(lambda t: F.avg_pool2d(t, 2)))


def test_convnet_state_dict_unchanged_by_the_pool():
    """The pool has no parameters: caches and stored nets of earlier versions still load."""
    net = ConvNet(ConvNetConfig(width=8))
    assert all(not k.startswith(("features.3.", "features.7.", "features.11.")) for k in net.state_dict())
    assert isinstance(net.features[3], torch.nn.AvgPool2d)


def test_allocator_tuning_runs_and_can_be_skipped():
    code = "from engine.allocator import tune_cpu_allocator as t; print(t(), t())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"DDAUDIT_TUNE_MALLOC": "0", "PATH": "/usr/bin:/bin"})
    expected = "True True" if sys.platform.startswith("linux") else "False False"
    assert on.stdout.split() == expected.split() and off.stdout.split() == ["False", "False"]
