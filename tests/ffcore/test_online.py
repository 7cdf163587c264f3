"""The online-learning contract (ffcore.online) on synthetic data: no Redis, no service."""

import copy
import tracemalloc

import pytest
import torch

from ffcore.checkpoint import from_bytes, to_bytes
from ffcore.layers import LayerConfig
from ffcore.layers import ff_dz
from ffcore.online import FFGradient, OnlineConfig, OnlineLearner, ReplaySample, add_peer_dz_, negative_gradient
from ffcore.recurrent import RecurrentConfig, RecurrentFF


def _model(widths=(16, 12), d=20, c=4, seed=0, **kw):
    torch.manual_seed(seed)
    return RecurrentFF(RecurrentConfig(input_dim=d, num_classes=c, widths=widths, **kw))


@pytest.mark.parametrize("activation,goodness", [("relu", "max_ssq"), ("tanh", "min_ssq"), ("gelu", "max_sum"),
                                                 ("sigmoid", "max_ssq"), ("leaky_relu", "min_sum")])
def test_closed_form_gradient_equals_autograd(activation, goodness):
    model = _model(layer=LayerConfig(activation=activation, goodness=goodness))
    x, labels = torch.rand(5, 20), torch.tensor([0, 1, 2, 3, 1])
    state = model.initial_state(x)
    top = model.label_vector(labels, 5, "cpu")
    learner = OnlineLearner(model)
    learner.learn_step(x, labels, state)
    for i, layer in enumerate(model.layers):
        # delta_factors is -lr * d(mean loss)/dz by autograd; ours is the sum over frames
        left, right, _ = layer.delta_factors(model._inputs(x, top, state.activities, i), "positive", 1.0)
        assert torch.allclose(learner.positive.weights[i], -(left.T @ right) * 5, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_peer_normalization_of_an_online_step_is_the_offline_layers_closed_form(activation):
    """FFS_PEER_NORMALIZATION in the service: per frame, so a step's mean equals FFLinear's
    batch update on the same (positive, labeled) rows."""
    model = _model(layer=LayerConfig(activation=activation, peer_normalization=0.3))
    layer = model.layers[0]
    layer.peer_running_mean.uniform_(0.0, 1.0)
    x = torch.randn(6, layer.linear.weight.shape[1])
    z = layer.linear(x)
    y = layer._act(z)
    mask = torch.tensor([True, False, True, True, False, True])
    twin = copy.deepcopy(layer)
    online = ff_dz(layer, z, y, "positive")
    add_peer_dz_(layer, z, y, online, mask)
    offline = ff_dz(twin, z[mask], y[mask], "positive") / 4  # FFLinear averages over the batch's rows
    twin._peer_gradient(z[mask], y[mask], offline)
    assert torch.allclose(online[mask] / 4, offline, atol=1e-6)
    assert torch.equal(online[~mask], ff_dz(twin, z[~mask], y[~mask], "positive"))  # rows not learned: untouched
    assert torch.allclose(layer.peer_running_mean, twin.peer_running_mean)
    assert not torch.allclose(online[mask], ff_dz(twin, z[mask], y[mask], "positive"))  # it did add something


def test_accumulating_w_frames_equals_one_batched_step():
    x, labels = torch.rand(12, 20), torch.randint(0, 4, (12,))
    one_by_one, batched = OnlineLearner(_model()), OnlineLearner(_model())
    state = one_by_one.model.initial_state(x)
    for i in range(12):  # twelve steps of one stream each, from the same states
        one_by_one.learn_step(x[i : i + 1], labels[i : i + 1], state.index([i]))
    batched.learn_step(x, labels, state)
    a, b = one_by_one.take_positive(), batched.take_positive()
    assert a.count == b.count == 12
    for wa, wb in zip(a.weights, b.weights):
        assert torch.allclose(wa, wb, atol=1e-5)
    one_by_one.apply(a)
    batched.apply(b)
    for pa, pb in zip(one_by_one.model.layers.parameters(), batched.model.layers.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_memory_of_the_positive_phase_is_flat_in_the_window():
    learner = OnlineLearner(_model(widths=(64, 64), d=100), OnlineConfig(replay=8))
    x, labels = torch.rand(16, 100), torch.randint(0, 4, (16,))
    state = learner.model.initial_state(x)

    def peak(steps: int) -> int:
        nonlocal state
        tracemalloc.start()
        for _ in range(steps):
            state = learner.learn_step(x, labels, state).state
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    peak(5)
    small, large = peak(20), peak(400)  # 320 vs 6,400 frames accumulated
    assert learner.positive.count == 16 * 425
    assert large < 2 * small + 200_000
    assert len(learner.take_replay()) == 8  # the replay sample is bounded too


def test_frozen_means_bit_identical_ff_weights_while_the_readout_learns():
    learner = OnlineLearner(_model(), OnlineConfig(freeze=True))
    before = [p.clone() for p in learner.model.layers.parameters()]
    readout = learner.model.readout.linear.weight.clone()
    x, labels = torch.rand(8, 20), torch.randint(0, 4, (8,))
    state = learner.model.initial_state(x)
    for _ in range(5):
        state = learner.learn_step(x, labels, state).state
    learner.apply(learner.take_positive())
    learner.apply(negative_gradient(learner.model, x, (labels + 1) % 4, 2, state))
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.layers.parameters()))
    assert not torch.equal(readout, learner.model.readout.linear.weight)


def test_predictions_are_made_before_learning():
    learner = OnlineLearner(_model())
    x, labels = torch.rand(6, 20), torch.tensor([0, 1, -1, 3, 2, -1])
    state = learner.model.initial_state(x)
    expected = learner.model.readout(learner.model.bottom_up_features(x[labels >= 0]))
    out = learner.learn_step(x, labels, state)
    assert torch.allclose(out.logits, expected) and out.logits.shape == (4, 4)
    after = learner.model.readout(learner.model.bottom_up_features(x[labels >= 0]))
    assert not torch.allclose(out.logits, after)  # the readout learned from the step
    assert learner.positive.count == 4  # unlabeled frames move their state and learn nothing


def test_wake_sleep_rhythm_with_a_window_of_one_step_equals_the_interleaved_update():
    """Separated phases (the positive step applied, the snapshot shipped as bytes, its negatives
    computed there and applied later) equal the two updates done in one place."""
    x, labels = torch.rand(10, 20), torch.randint(0, 4, (10,))
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    here, apart = OnlineLearner(_model()), OnlineLearner(_model())
    state_a = state_b = here.model.initial_state(x)
    for _ in range(3):
        out = here.learn_step(x, labels, state_a)
        here.apply(here.take_positive())
        sample = here.take_replay()
        here.apply(negative_gradient(here.model, x, here.model.negative_labels(x, labels, gen_a), 2, sample.state))
        state_a = out.state

        out = apart.learn_step(x, labels, state_b)
        apart.apply(apart.take_positive())
        snapshot = from_bytes(to_bytes(apart.model))  # what the sleep worker loads
        sample = ReplaySample.from_bytes(apart.take_replay().to_bytes())
        wrong = snapshot.negative_labels(sample.frames, sample.labels, gen_b)
        grad = FFGradient.from_bytes(negative_gradient(snapshot, sample.frames, wrong, 2, sample.state).to_bytes())
        apart.apply(grad)
        state_b = out.state
    for pa, pb in zip(here.model.parameters(), apart.model.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_lookahead_is_the_step_apply_takes_and_leaves_the_learner_unchanged():
    """A deferred positive step: the sleep worker dreams on ``lookahead(grad)``, the live weights
    take ``apply(grad)`` later. With momentum the two must still be the same step."""
    learner = OnlineLearner(_model(), OnlineConfig(momentum=0.9))
    x, labels = torch.rand(10, 20), torch.randint(0, 4, (10,))
    state = learner.model.initial_state(x)
    for _ in range(3):  # a momentum buffer that is not zero
        state = learner.learn_step(x, labels, state).state
        learner.apply(learner.take_positive())
    state = learner.learn_step(x, labels, state).state
    grad = learner.take_positive()
    before = [p.detach().clone() for p in learner.model.parameters()]
    momentum = [b.clone() for b in learner.state_tensors().values()]
    ahead = learner.lookahead(grad)
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(momentum, learner.state_tensors().values()))
    assert any(not torch.equal(a, b) for a, b in zip(before, ahead.parameters()))
    learner.apply(grad)
    for live, looked in zip(learner.model.parameters(), ahead.parameters()):
        assert torch.equal(live, looked)


def test_malformed_gradients_and_samples_are_refused_clearly():
    with pytest.raises(ValueError, match="not a serialized FF gradient"):
        FFGradient.from_bytes(b"junk")
    with pytest.raises(ValueError, match="not a serialized replay sample"):
        ReplaySample.from_bytes(b"junk")
    with pytest.raises(ValueError, match="lr must be > 0"):
        OnlineConfig(lr=0)


def test_input_centering_makes_the_net_blind_to_a_constant_offset():
    """With center_input, frames and frames + c (a sensor's baseline) give the same features
    once the running mean has seen each stream: layer norm removes scale, centering offset."""
    x = torch.rand(64, 20)
    feats = []
    for offset in (0.0, 5.0):
        model = _model(center_input=True, center_horizon=64)
        model.observe_inputs(x + offset)
        assert torch.allclose(model.input_mean, (x + offset).mean(0), atol=1e-5)
        feats.append(model.bottom_up_features(x + offset))
    assert torch.allclose(feats[0], feats[1], atol=1e-3)
    plain = _model()
    plain.observe_inputs(x)  # off by default: the library's nets see raw frames
    assert torch.equal(plain.input_mean, torch.zeros(20))


def test_predictions_use_the_averaged_readout_when_configured():
    learner = OnlineLearner(_model(readout_average=10))
    x, labels = torch.rand(30, 20), torch.randint(0, 4, (30,))
    for i in range(0, 30, 3):
        learner.learn_readout(x[i : i + 3], labels[i : i + 3])
    model = learner.model
    features = model.bottom_up_features(x)
    live = model.readout(features)
    served = features @ model.readout_mean.T
    assert torch.allclose(torch.log_softmax(served, 1).exp(), model.predict_fast(x), atol=1e-6)
    assert not torch.allclose(live, served)  # the average lags the last iterate


def test_a_step_of_fewer_frames_than_step_frames_moves_the_weights_proportionally_less():
    """A window closed early (a trickle of frames) learns at the same rate per frame as a full one."""
    torch.manual_seed(0)
    x, y = torch.rand(5, 20), torch.randint(0, 4, (5,))
    moves = {}
    for step_frames in (1, 50):
        model = _model()
        learner = OnlineLearner(model, OnlineConfig(lr=0.5, step_frames=step_frames))
        before = [layer.linear.weight.clone() for layer in model.layers]
        learner.learn_step(x, y, model.initial_state(x))
        learner.apply(learner.take_positive())
        moves[step_frames] = [layer.linear.weight - w for layer, w in zip(model.layers, before)]
    for full, scaled in zip(moves[1], moves[50]):
        assert full.abs().max() > 0
        assert torch.allclose(scaled, full * 5 / 50, atol=1e-7)
    with pytest.raises(ValueError, match="step_frames must be >= 1"):
        OnlineConfig(step_frames=0)


def test_a_gradient_sent_as_bfloat16_comes_back_float32_and_rounded():
    from ffcore.online import FFGradient

    g = torch.Generator().manual_seed(1)
    grad = FFGradient([torch.randn(6, 5, generator=g)], [torch.randn(6, generator=g)], count=7)
    back = FFGradient.from_bytes(grad.to_bytes(torch.bfloat16))
    assert back.count == 7 and back.weights[0].dtype == back.biases[0].dtype == torch.float32
    torch.testing.assert_close(back.weights[0], grad.weights[0].to(torch.bfloat16).float(), rtol=0, atol=0)
    assert not torch.equal(back.weights[0], grad.weights[0])
    assert len(grad.to_bytes(torch.bfloat16)) < len(grad.to_bytes())
