"""dropout with a counter-based mask: bitwise equal to its plain-PyTorch reference, the right keep
rate, independent masks per seed, gradients through the same mask, repeatable under torch seeds."""
from __future__ import annotations

import math

import pytest
import torch

from fgp_ext import ops
from fgp_ext import reference as ref
from fgp_ext.encoders import build_encoder
from fgp_ext.encoders.base import Dropout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3, -5])
def test_matches_reference_bitwise(dtype, p, seed):
    x = torch.randn(37, 29, dtype=dtype)
    torch.testing.assert_close(torch.ops.fgp.dropout(x, p, seed), ref.dropout(x, p, seed), rtol=0, atol=0)


def test_non_contiguous_input_is_read_in_logical_order():
    x = torch.randn(20, 30).t()
    assert torch.equal(torch.ops.fgp.dropout(x, 0.3, 11), torch.ops.fgp.dropout(x.contiguous(), 0.3, 11))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_keep_rate_and_scaling(p):
    n = 1_000_000
    out = torch.ops.fgp.dropout(torch.ones(n), p, 1234)
    kept = out != 0
    rate, sd = float(kept.float().mean()), math.sqrt(p * (1 - p) / n)
    assert abs(rate - (1 - p)) < 5 * sd
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
    # no structure along the index: the keep rate of every contiguous block of 1000 is binomial
    blocks = kept.reshape(1000, 1000).float().mean(1)
    assert float(blocks.std()) < 2 * math.sqrt(p * (1 - p) / 1000)


@pytest.mark.parametrize("s1,s2", [(1, 2), (1000, 1001), (7, 7 ^ 4096)])
def test_masks_of_different_seeds_are_independent(s1, s2):
    """Also for seeds a few bits apart (a step counter): the seed is scrambled before it keys the
    hash, so the masks are not permutations of each other."""
    a = torch.ops.fgp.dropout(torch.ones(200_000), 0.5, s1) != 0
    b = torch.ops.fgp.dropout(torch.ones(200_000), 0.5, s2) != 0
    both = float((a & b).float().mean())
    assert abs(both - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 200_000)
    pairs = a.reshape(-1, 2)  # seeds XOR-ed in raw would swap neighbours: b = a with pairs swapped
    assert not torch.equal(b.reshape(-1, 2), pairs.flip(1))


def test_gradient_reapplies_the_mask_gradcheck_and_opcheck():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.dropout(t, 0.4, seed=99), (x,))
    out = ops.dropout(x, 0.4, seed=99)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
    torch.testing.assert_close(g, (out != 0).double() / 0.6)
    torch.library.opcheck(torch.ops.fgp.dropout, (x.detach(), 0.4, 99))


def test_repeatable_under_torch_manual_seed_and_thread_counts(num_threads):
    x = torch.randn(3000, 40)
    torch.set_num_threads(1)
    torch.manual_seed(5)
    a = ops.dropout(x, 0.2)
    torch.set_num_threads(num_threads)
    torch.manual_seed(5)
    assert torch.equal(ops.dropout(x, 0.2), a)
    assert not torch.equal(ops.dropout(x, 0.2), a)  # the next draw: a new seed, a new mask


def test_identity_when_not_training_and_the_module():
    x = torch.randn(4, 3)
    assert ops.dropout(x, 0.5, training=False) is x and ops.dropout(x, 0.0) is x
    d = Dropout(0.5)
    assert torch.equal(d.eval()(x), x) and not torch.equal(d.train()(x), x)
    enc = build_encoder("gatedgcn", 5, hidden=8)
    assert any(isinstance(m, Dropout) for m in enc.modules())
    assert not any(isinstance(m, torch.nn.Dropout) for m in enc.modules())


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_probability(p):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ops.dropout(torch.ones(3), p)
    with pytest.raises(RuntimeError, match=r"\[0, 1\]"):
        torch.ops.fgp.dropout(torch.ones(3), p, 0)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.fgp.dropout(torch.ones(3, dtype=torch.int64), 0.5, 0)


def test_opcheck_on_non_contiguous_input():
    """The fake kernel reports the real kernel's (contiguous) layout for any input layout."""
    torch.library.opcheck(torch.ops.fgp.dropout, (torch.randn(6, 5).t(), 0.3, 5))
