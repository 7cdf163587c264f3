import pytest
import torch

from ffcore.goodness import activity_measure, layer_norm
from ffcore.layers import ACTIVATIONS, FFLinear, LayerConfig, threshold_schedule

PLAIN_SGD = LayerConfig(optimizer="sgd", lr=0.01, momentum=0.0, weight_decay=0.0)


def _layer(config=PLAIN_SGD, d=20, n=30, seed=0, threshold=None):
    torch.manual_seed(seed)
    return FFLinear(d, n, threshold=float(n) if threshold is None else threshold, config=config)


@pytest.mark.parametrize("phase", ["positive", "negative"])
def test_update_on_x_leaves_normalized_output_for_x_unchanged(phase):
    """Paper section 6: an FF update for input x scales every hidden activity by the same factor."""
    x = torch.rand(1, 20)
    # threshold at the current goodness: the logistic is at its steepest, so both phases move
    layer = _layer()
    layer.threshold = activity_measure(layer(x)).item()
    before = layer(x).detach()
    assert activity_measure(before).item() > 0
    layer.train_step(x if phase == "positive" else None, x if phase == "negative" else None)
    after = layer(x).detach()
    assert not torch.allclose(after, before)  # the update did change the activities...
    assert torch.allclose(layer_norm(after), layer_norm(before), atol=1e-5)  # ...but not their direction


def test_no_gradient_reaches_the_layer_below():
    torch.manual_seed(0)
    below, above = _layer(d=20, n=30), _layer(d=30, n=10, seed=1)
    x = torch.rand(8, 20)
    y_pos, y_neg = below(x), below(x.flip(0))  # graph attached to `below`'s weights
    assert y_pos.requires_grad
    w_before, above_before = below.linear.weight.detach().clone(), above.linear.weight.detach().clone()
    above.train_step(y_pos, y_neg)
    assert below.linear.weight.grad is None and below.linear.bias.grad is None
    assert torch.equal(below.linear.weight, w_before)
    assert not torch.equal(above.linear.weight, above_before)  # the layer above did learn


def test_positive_and_negative_updates_move_goodness_apart():
    layer = _layer(LayerConfig(optimizer="sgd", lr=0.005, momentum=0.9, weight_decay=0.0))
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.rand(64, 20, generator=g), torch.rand(64, 20, generator=g) * torch.linspace(0, 1, 20)
    first = layer.train_step(pos, neg)
    for _ in range(50):
        last = layer.train_step(pos, neg)
    assert last.loss < first.loss
    assert last.goodness_pos - last.goodness_neg > first.goodness_pos - first.goodness_neg + 1.0


def test_min_ssq_gives_positive_data_low_activity():
    layer = _layer(LayerConfig(goodness="min_ssq", optimizer="sgd", lr=0.005, momentum=0.9, weight_decay=0.0))
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.rand(64, 20, generator=g), torch.rand(64, 20, generator=g) * torch.linspace(0, 1, 20)
    for _ in range(100):
        step = layer.train_step(pos, neg)
    assert step.goodness_pos < step.goodness_neg  # activity measure: sum of squares


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_learns(activation):
    layer = _layer(LayerConfig(activation=activation, optimizer="adam", lr=0.01, weight_decay=0.0))
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.rand(64, 20, generator=g), torch.rand(64, 20, generator=g) * torch.linspace(0, 1, 20)
    first = layer.train_step(pos, neg).loss
    for _ in range(30):
        last = layer.train_step(pos, neg).loss
    assert last < first


def test_peer_normalization_revives_dead_units():
    """Footnote 9: a dead ReLU has no derivative, but peer normalization pretends it does."""
    for strength, should_move in [(0.0, False), (1.0, True)]:
        layer = _layer(LayerConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0,
                                   peer_normalization=strength))
        with torch.no_grad():
            layer.linear.bias[0] = -100.0  # unit 0 is dead on every input
        x = torch.rand(16, 20)
        assert layer(x)[:, 0].abs().max() == 0
        w0 = layer.linear.weight[0].detach().clone()
        layer.train_step(x, None)
        moved = not torch.equal(layer.linear.weight[0], w0)
        assert moved == should_move
        if should_move:  # towards more activity: its bias grows
            assert layer.linear.bias[0].item() > -100.0


@pytest.mark.parametrize("width", [40, 400])
def test_peer_normalization_pushes_each_unit_by_its_deviation_whatever_the_width(width):
    """Footnote 9 as the paper's code applies it: every positive row's unit j gets the additional
    derivative strength x (running mean_j - the layer's mean of them), not divided by the width
    (until 2026-12-01 it was, which made the presets' 0.03 a no-op at 2000 units)."""
    layer = FFLinear(20, width, threshold=float(width),
                     config=LayerConfig(peer_normalization=0.5, peer_momentum=0.0))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, width, generator=g) + torch.linspace(-1, 2, width)  # units of different mean activity
    y = torch.relu(z)
    dz, deviation = layer.peer_dz(z, y, per=4)
    expected = 0.5 * (y.mean(dim=0) - y.mean()) / 4
    torch.testing.assert_close(dz, expected.expand_as(dz))
    # a descent step lowers the most active unit and raises the least active (dead ones too), by O(1)
    assert dz[0, -1] > 0.05 and dz[0, 0] < -0.05


def test_peer_running_mean_tracks_activity():
    layer = _layer(LayerConfig(peer_normalization=0.1, peer_momentum=0.0))
    x = torch.rand(16, 20)
    layer.train_step(x, None)
    # momentum 0: the running mean is the batch mean activity seen during the step
    assert layer.peer_running_mean.shape == (30,)
    assert (layer.peer_running_mean >= 0).all() and layer.peer_running_mean.sum() > 0


def test_threshold_schedules():
    assert threshold_schedule((10, 20)) == (10.0, 20.0)
    pyramid = threshold_schedule((100, 100, 100, 100), scale=1.0, pyramid=0.5)
    assert pyramid == (100.0, 150.0, 200.0, 250.0)
    assert all(a < b for a, b in zip(pyramid, pyramid[1:]))
    with pytest.raises(ValueError, match="pyramid must be >= 0"):
        threshold_schedule((10,), pyramid=-1)


def test_symmetric_loss_layer_needs_both_phases():
    layer = _layer(LayerConfig(loss="symmetric"))
    with pytest.raises(ValueError, match="needs both"):
        layer.train_step(torch.rand(4, 20), None)
    step = layer.train_step(torch.rand(4, 20), torch.rand(4, 20))
    assert step.loss > 0


@pytest.mark.parametrize("field,value,message", [
    ("activation", "swish", "activation 'swish'"),
    ("goodness", "max_abs", "goodness 'max_abs'"),
    ("optimizer", "lbfgs", "optimizer 'lbfgs'"),
    ("lr", 0.0, "lr must be > 0"),
    ("peer_momentum", 1.0, "peer_momentum"),
])
def test_layer_config_refuses_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        LayerConfig(**{field: value})


def _autograd_step(layer, x_pos, x_neg):
    """The reference: the layer's loss through autograd, one optimizer step."""
    loss, _, _ = layer.local_loss(x_pos, x_neg)
    layer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    layer.optimizer.step()
    return float(loss.detach())


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("goodness", ["max_ssq", "min_ssq", "max_sum", "min_sum"])
@pytest.mark.parametrize("phases", ["both", "positive", "negative"])
@pytest.mark.parametrize("temperature", [0.0, 0.25])
@pytest.mark.parametrize("peer", [0.0, 0.03])
def test_the_closed_form_step_equals_the_autograd_step(activation, goodness, phases, temperature, peer):
    g = torch.Generator().manual_seed(0)
    x_pos, x_neg = torch.randn(12, 20, generator=g), torch.randn(9, 20, generator=g)
    x_pos, x_neg = (x_pos if phases != "negative" else None), (x_neg if phases != "positive" else None)
    config = LayerConfig(activation=activation, goodness=goodness, lr=0.05, temperature=temperature,
                         peer_normalization=peer)
    torch.manual_seed(1)
    fast = FFLinear(20, 16, threshold=4.0, config=config)
    reference = FFLinear(20, 16, threshold=4.0, config=config)
    reference.load_state_dict(fast.state_dict())
    assert fast.closed_form()
    for _ in range(3):  # momentum and weight decay included
        step = fast.train_step(x_pos, x_neg)
        loss = _autograd_step(reference, x_pos, x_neg)
        assert step.loss == pytest.approx(loss, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(fast.linear.weight, reference.linear.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.linear.bias, reference.linear.bias, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.peer_running_mean, reference.peer_running_mean)


def test_bfloat16_products_stay_close_to_float32_and_keep_float32_weights():
    g = torch.Generator().manual_seed(0)
    x_pos, x_neg = torch.randn(64, 100, generator=g), torch.randn(64, 100, generator=g)
    torch.manual_seed(1)
    full = FFLinear(100, 50, threshold=50.0, config=LayerConfig(lr=0.01))
    half = FFLinear(100, 50, threshold=50.0, config=LayerConfig(lr=0.01, matmul_dtype="bfloat16"))
    half.load_state_dict(full.state_dict())
    a, b = full.train_step(x_pos, x_neg), half.train_step(x_pos, x_neg)
    assert half.linear.weight.dtype == torch.float32 and b.y_pos.dtype == torch.float32
    assert b.goodness_pos == pytest.approx(a.goodness_pos, rel=0.02)
    assert (half.linear.weight - full.linear.weight).abs().max() < 1e-3
    assert not torch.equal(half.linear.weight, full.linear.weight)  # it did use the other precision
    for _ in range(5):  # the products always see the current weights (the fused step bumps no version)
        half.train_step(x_pos, x_neg)
        with torch.no_grad():
            expected = torch.nn.functional.linear(half.normalized_input(x_pos), half.linear.weight, half.linear.bias)
            torch.testing.assert_close(half.pre_activation(x_pos), expected, rtol=0.05, atol=0.05)


def test_fan_in_lr_scale_makes_the_step_per_input_the_same_for_every_width():
    from ffcore.layers import LR_REFERENCE_FAN_IN

    config = LayerConfig(lr=1e-3, lr_scale="fan_in")
    for fan_in in (784, 2000):
        layer = FFLinear(fan_in, 16, 16.0, config)
        assert layer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * LR_REFERENCE_FAN_IN / fan_in)
    assert FFLinear(2000, 16, 16.0, LayerConfig(lr=1e-3)).optimizer.param_groups[0]["lr"] == 1e-3
    with pytest.raises(ValueError, match="lr_scale 'width' not in"):
        LayerConfig(lr_scale="width")


def test_fan_in_lr_scale_of_a_masked_layer_counts_its_receptive_field():
    from ffcore.local import FFMasked, layout_masks

    mask = layout_masks("footnote8", (28, 28))[0]
    layer = FFMasked(mask, 1.0, LayerConfig(lr=1e-3, lr_scale="fan_in"))
    assert layer.fan_in == int(mask[0].sum()) < 784
    assert layer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 1000 / layer.fan_in)


def test_the_recurrent_net_refuses_a_scaled_lr():
    from ffcore.recurrent import RecurrentConfig

    with pytest.raises(ValueError, match="lr_scale must be 'none'"):
        RecurrentConfig(layer=LayerConfig(lr_scale="fan_in"))


@pytest.mark.parametrize("decay_biases", [True, False])
def test_decay_biases_switches_the_decay_of_the_biases_alone(decay_biases):
    layer = _layer(LayerConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.5, decay_biases=decay_biases))
    with torch.no_grad():
        layer.linear.bias.fill_(1.0)
    weight, bias = layer.linear.weight.detach().clone(), layer.linear.bias.detach().clone()
    for p in layer.parameters():
        p.grad = torch.zeros_like(p)  # a step of the decay alone
    layer.optimizer.step()
    torch.testing.assert_close(layer.linear.weight, weight * (1 - 0.1 * 0.5))
    torch.testing.assert_close(layer.linear.bias, bias * (1 - 0.1 * 0.5) if decay_biases else bias)
