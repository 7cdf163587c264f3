import pytest
import torch

from ffcore.finite import all_finite


def tensors():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(64, 96, generator=g), torch.randn(96, generator=g), torch.randn(3, 5, generator=g)]


def test_finite_tensors_pass():
    assert all_finite(tensors())
    assert all_finite([])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_one_bad_element_is_found(bad, which):
    ts = tensors()
    ts[which].view(-1)[7] = bad
    assert not all_finite(ts)


def test_opposite_infinities_do_not_cancel():
    ts = tensors()
    ts[0][0, 0], ts[0][0, 1] = float("inf"), float("-inf")
    assert not all_finite(ts)


def test_large_finite_values_do_not_overflow_the_check():
    # float32 values near the top of their range: a float32 sum would overflow to infinity
    ts = [torch.full((1000,), 3.0e38)]
    assert all_finite(ts)
    assert not bool(torch.isfinite(ts[0].sum()))  # the trap the float64 sum avoids


def test_parameters_with_gradients_are_checked_without_autograd():
    w = torch.nn.Parameter(torch.ones(4, 4))
    assert all_finite([w])
    with torch.no_grad():
        w[1, 1] = float("nan")
    assert not all_finite([w])
