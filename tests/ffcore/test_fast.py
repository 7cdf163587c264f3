import pytest
import torch

from ffcore.fast import fast_epsilon, fast_update
from ffcore.goodness import activity_measure, layer_norm
from ffcore.layers import LayerConfig
from ffcore.mlp import FFMLP, MLPConfig


def _mlp(activation="relu", goodness="max_ssq", widths=(40, 30, 20), seed=0):
    torch.manual_seed(seed)
    return FFMLP(MLPConfig(input_dim=36, num_classes=4, widths=widths, image_shape=None,
                           layer=LayerConfig(activation=activation, goodness=goodness)))


def _outputs(model, x):
    """Each layer's activity (before normalization) for the input ``x`` (1, D)."""
    return list(model.activities(x).values())


@pytest.mark.parametrize("activation,goodness", [("relu", "max_ssq"), ("leaky_relu", "max_ssq"),
                                                 ("relu", "max_sum"), ("relu", "min_ssq")])
@pytest.mark.parametrize("target", [0.3, 50.0])
def test_one_step_reaches_the_desired_goodness_in_every_layer_and_keeps_each_direction(activation, goodness, target):
    model = _mlp(activation, goodness)
    x = model.encode(torch.rand(1, 36), torch.tensor([2]))
    before = _outputs(model, x)
    epsilons = fast_update(model.layers, x, target)
    after = _outputs(model, x)
    for y0, y1, eps in zip(before, after, epsilons):
        # every layer's goodness for this input is now the desired one ...
        assert float(activity_measure(y1, goodness)) == pytest.approx(target, rel=1e-4)
        # ... while its layer-normalized output, all the next layer sees, is unchanged (section 6)
        assert torch.allclose(layer_norm(y1, goodness), layer_norm(y0, goodness), rtol=1e-4, atol=1e-5)
        assert eps != 0
    # a second step to the same goodness has nothing left to do
    assert all(abs(e) < 1e-3 for e in fast_update(model.layers, x, target))  # fp32 rounding


def test_epsilon_is_equation_4_for_the_sum_of_squares():
    assert fast_epsilon(4.0, 16.0, "max_ssq") == pytest.approx(1.0)  # sqrt(16 / 4) - 1
    assert fast_epsilon(4.0, 1.0, "max_ssq") == pytest.approx(-0.5)
    assert fast_epsilon(4.0, 16.0, "max_sum") == pytest.approx(3.0)  # the unsquared measure scales linearly


def test_other_inputs_are_changed_but_the_one_learned_is_what_the_step_is_for():
    model = _mlp()
    x = model.encode(torch.rand(2, 36), torch.tensor([1, 3]))
    other_before = _outputs(model, x[1:])
    fast_update(model.layers, x[:1], [5.0, 6.0, 7.0])
    assert [round(float(activity_measure(y)), 3) for y in _outputs(model, x[:1])] == [5.0, 6.0, 7.0]
    assert any(not torch.allclose(a, b) for a, b in zip(other_before, _outputs(model, x[1:])))


def test_what_learning_fast_cannot_do_is_refused_clearly():
    x = torch.rand(1, 36)
    with pytest.raises(ValueError, match="scales with its input"):
        fast_update(_mlp("gelu").layers, x, 1.0)
    with pytest.raises(ValueError, match="desired goodness"):
        fast_update(_mlp().layers, x, -1.0)
    with pytest.raises(ValueError, match="3 layers"):
        fast_update(_mlp().layers, x, [1.0, 2.0])
    dead = _mlp()
    with torch.no_grad():
        dead.layers[0].linear.weight.fill_(-1.0)  # no unit active for a non-negative input
        dead.layers[0].linear.bias.fill_(-1.0)
    with pytest.raises(ValueError, match="no unit"):
        fast_update(dead.layers, x, 1.0)
