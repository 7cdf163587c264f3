import pytest
import torch

from ffcore.backprop import BackpropMLP
from ffcore.blackbox import BlackBox, straight_through
from ffcore.layers import LayerConfig
from ffcore.mlp import FFMLP, MLPConfig


def test_the_box_is_stochastic_and_has_no_derivative():
    box = BlackBox(8, noise=0.1, seed=0)
    x = torch.rand(4, 8, requires_grad=True)
    y1, y2 = box(x), box(x)
    assert y1.shape == (4, 8) and y1.grad_fn is None and not y1.requires_grad  # nothing to backpropagate
    assert not torch.equal(y1, y2)  # noise: the same input gives another output
    assert torch.allclose(y1, y2, atol=0.5 * float(y1.abs().max()))  # but the same transformation
    assert torch.equal(BlackBox(8, noise=0.0, seed=3)(x), BlackBox(8, noise=0.0, seed=3)(x))
    with pytest.raises(ValueError, match="noise"):
        BlackBox(8, noise=-1.0)


def _data(n=256, d=24, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    protos = torch.rand(c, d, generator=gen)
    y = torch.randint(0, c, (n,), generator=gen)
    return (protos[y] + 0.2 * torch.rand(n, d, generator=gen)).clamp(0, 1), y


def _config(layer):
    return MLPConfig(input_dim=24, num_classes=3, widths=(32, 32, 32), image_shape=None, layer=layer)


def test_ff_learns_every_layer_through_the_box_and_its_goodness_is_the_layers_own():
    x, y = _data()
    torch.manual_seed(0)
    model = FFMLP(_config(LayerConfig(lr=3e-3)))
    model.between = {0: BlackBox(32, noise=0.1, seed=1)}
    before = [layer.linear.weight.detach().clone() for layer in model.layers]
    for _ in range(30):
        model.train_batch(x, y)
    assert all(not torch.equal(b, layer.linear.weight) for b, layer in zip(before, model.layers))
    assert float((model.predict(x, "softmax") != y).float().mean()) < 0.2  # chance is 0.67
    # the goodness and the readout read each layer's own output, not the box's
    ys = model.activities(model.encode(x[:4]))
    assert torch.equal(ys[0], model.layers[0](model.encode(x[:4])))


def test_backprop_cannot_learn_below_the_box_unless_it_guesses_a_derivative():
    x, y = _data()
    for between, first_learns in ((BlackBox(32, seed=1), False), (straight_through(BlackBox(32, seed=1)), True)):
        torch.manual_seed(0)
        model = BackpropMLP(_config(LayerConfig(optimizer="adam", lr=1e-3)))
        model.between = {0: between}
        first, above = model.layers[0].weight.detach().clone(), model.layers[1].weight.detach().clone()
        for _ in range(5):
            model.train_batch(x, y)
        assert (not torch.equal(first, model.layers[0].weight)) == first_learns
        assert not torch.equal(above, model.layers[1].weight)  # above the box backprop learns either way
