import math

import pytest
import torch

from ffcore.goodness import ff_loss, goodness, layer_norm, p_positive, positive_logit, symmetric_loss

Y = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 4.0]])


def test_goodness_by_hand():
    assert goodness(Y, "max_ssq").tolist() == [5.0, 25.0]
    assert goodness(Y, "min_ssq").tolist() == [-5.0, -25.0]
    assert goodness(Y, "max_sum").tolist() == [3.0, 7.0]
    assert goodness(Y, "min_sum").tolist() == [-3.0, -7.0]


def test_p_positive_is_logistic_of_goodness_minus_threshold():
    # paper eq. 1: sigma(sum y^2 - theta); for min_ssq positive data should be LOW: sigma(theta - sum y^2)
    assert p_positive(Y, 4.0, "max_ssq").tolist() == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-21))])
    assert p_positive(Y, 4.0, "min_ssq").tolist() == pytest.approx([1 / (1 + math.exp(1)), 1 / (1 + math.exp(21))])
    assert positive_logit(Y, 5.0, "max_sum").tolist() == [-2.0, 2.0]


def test_layer_norm_keeps_direction_without_subtracting_the_mean():
    y = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    out = layer_norm(y)
    rms = math.sqrt(12.5)
    assert out[0].tolist() == pytest.approx([3 / rms, 4 / rms])
    assert out[1].tolist() == pytest.approx([1.0, 1.0])  # mean subtraction would give zeros
    # no trace of goodness left: scaling the input changes nothing
    assert torch.allclose(layer_norm(10 * y), out)


def test_layer_norm_for_unsquared_goodness_normalizes_the_sum():
    out = layer_norm(torch.tensor([[1.0, 3.0]]), "max_sum")
    assert out.tolist() == [pytest.approx([0.5, 1.5])]


def test_ff_loss_by_hand():
    pos, neg = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    # -log sigma(4 - 1) on positive, -log(1 - sigma(2 - 1)) on negative
    expected_pos = math.log(1 + math.exp(-3))
    expected_neg = math.log(1 + math.exp(1))
    assert ff_loss(pos, None, 1.0).item() == pytest.approx(expected_pos)
    assert ff_loss(None, neg, 1.0).item() == pytest.approx(expected_neg)
    assert ff_loss(pos, neg, 1.0).item() == pytest.approx(expected_pos + expected_neg)


def test_ff_loss_needs_some_data():
    with pytest.raises(ValueError, match="positive data, negative data"):
        ff_loss(None, None, 1.0)


def test_symmetric_loss_by_hand():
    pos, neg = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    # gap per unit = (4 - 2) / 2 = 1
    assert symmetric_loss(pos, neg, alpha=4.0).item() == pytest.approx(math.log(1 + math.exp(-4)))
    with pytest.raises(ValueError, match="pairs examples"):
        symmetric_loss(pos, torch.ones(2, 2))


def test_unknown_goodness_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown goodness 'max_cube'"):
        goodness(Y, "max_cube")
