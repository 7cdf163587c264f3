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


# ---- the one-step correction of a recurrent net (the service's learn=fast) ----------------------

@pytest.mark.parametrize("masked", [False, True])
def test_the_contrastive_step_scales_the_corrected_input_and_leaves_the_others_exactly(masked):
    from ffcore.fast import contrastive_fast_step
    from ffcore.layers import FFLinear
    from ffcore.local import map_mask, restrict_linear

    torch.manual_seed(0)
    layer = FFLinear(48, 48, threshold=48.0, config=LayerConfig())
    if masked:  # a 4 x 4 map of 3 units per location, 3 x 3 fields
        restrict_linear(layer, map_mask((4, 4, 3), 3, 3))
    x, others = torch.rand(48), torch.rand(3, 48)
    others[:, :8] = x[:8]  # the inputs share a part, as a frame with different labels does
    with torch.no_grad():
        z0, z_others = layer.pre_activation(x[None]), layer.pre_activation(others)
        eps = contrastive_fast_step(layer, x, others, target=3.0 * float(activity_measure(layer(x[None]))))
        assert eps == pytest.approx(3.0**0.5 - 1, rel=1e-5)
        assert torch.allclose(layer.pre_activation(x[None]), (1 + eps) * z0, rtol=1e-4, atol=1e-4)  # equation 4
        assert torch.allclose(layer.pre_activation(others), z_others, atol=1e-4)  # the others untouched
    if masked:
        assert (layer.linear.weight[layer.mask == 0] == 0).all()
    assert contrastive_fast_step(layer, x, torch.stack((x, others[0])), target=1.0) is None  # x is in their span


@pytest.mark.parametrize("readout_average", [0, 100])
def test_a_correction_makes_both_classifiers_answer_the_label_and_leaves_the_others_mostly_alone(readout_average):
    from ffcore.data.synthetic import make_synthetic
    from ffcore.fast import correct
    from ffcore.recurrent import RecurrentConfig, RecurrentFF

    torch.manual_seed(0)
    model = RecurrentFF(RecurrentConfig(input_dim=196, widths=(64, 64), iterations=4, eval_window=(3, 4),
                                        readout_average=readout_average, layer=LayerConfig(lr=3e-3, momentum=0.9)))
    x, y = make_synthetic(600, seed=0, noise=0.4)
    for i in range(0, 400, 50):  # trained a little: it still makes mistakes
        model.train_batch(x[i : i + 50], y[i : i + 50])
    if readout_average:  # served predictions use the average (which only the online learner keeps)
        model.readout_mean.copy_(model.readout.linear.weight)
    test_x, test_y = x[400:], y[400:]
    wrong = (model.predict(test_x, "goodness") != test_y).nonzero().squeeze(1)
    assert len(wrong) >= 5
    accuracy_before = {m: (model.predict(test_x, m) == test_y).float().mean() for m in ("goodness", "softmax")}
    for i in wrong[:5].tolist():
        still_wrong = int(model.predict(test_x[i : i + 1], "goodness")) != int(test_y[i])  # earlier ones may fix it
        report = correct(model, test_x[i], int(test_y[i]))
        assert (report["goodness_before"] != int(test_y[i])) == still_wrong
        assert int(model.predict(test_x[i : i + 1], "goodness")) == int(test_y[i])
        assert int(model.predict(test_x[i : i + 1], "softmax")) == int(test_y[i])
    # Five corrections do not cost the other 195 frames (with the defaults they even gained:
    # ffcore.fast says what was measured).
    for method, before in accuracy_before.items():
        assert (model.predict(test_x, method) == test_y).float().mean() >= before - 0.03, method
    with pytest.raises(ValueError, match="not one of the model's 10 classes"):
        correct(model, test_x[0], 10)
    # the readout alone: the FF layers stay bit-identical and the goodness classifier is not run
    frozen = [p.detach().clone() for p in model.layers.parameters()]
    j = int(wrong[-1])
    report = correct(model, test_x[j], int(test_y[j]), ff_layers=False)
    assert report["goodness_before"] is None and report["fast_steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.layers.parameters()))
    assert int(model.predict(test_x[j : j + 1], "softmax")) == int(test_y[j])
