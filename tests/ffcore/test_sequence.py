"""The next-character model and figure 5's three regimes, on a tiny net and generated strings."""

import math

import pytest
import torch

from ffcore.online import FFGradient, normalized_step
from ffcore.sequence import NextCharConfig, NextCharFF, negative_windows, update, windows_of


def _strings(n=6, length=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 30, (n, length), generator=g)


def _model(**kw):
    return NextCharFF(NextCharConfig(context=4, hidden=16, depth=2, seed=0, **kw))


def _ff_weights(model):
    return [layer.linear.weight.clone() for layer in model.layers]


def test_windows_line_up_contexts_targets_and_positive_windows():
    s = torch.arange(12).view(1, 12) % 30
    contexts, targets, positives = windows_of(s, 4)
    assert contexts.shape == (8, 4) and targets.shape == (8,) and positives.shape == (8, 4)
    assert contexts[0].tolist() == [0, 1, 2, 3] and targets[0] == 4
    assert positives[0].tolist() == [1, 2, 3, 4]  # the real window ending at the predicted character
    assert contexts[-1].tolist() == [7, 8, 9, 10] and targets[-1] == 11


def test_an_untrained_model_predicts_uniformly_and_generation_keeps_the_prefix():
    model, strings = _model(), _strings()
    contexts, targets, _ = windows_of(strings, 4)
    assert math.isclose(model.cross_entropy(contexts, targets), math.log(30), rel_tol=1e-6)
    generated = model.generate(strings[:, :4], 24, torch.Generator().manual_seed(1))
    assert torch.equal(generated[:, :4], strings[:, :4]) and generated.shape == (6, 24)
    again = model.generate(strings[:, :4], 24, torch.Generator().manual_seed(1))
    assert torch.equal(generated, again)  # seeded


def test_fixed_learns_only_the_softmax():
    model, strings = _model(), _strings()
    before = _ff_weights(model)
    nats = [update(model, strings, "fixed", torch.Generator().manual_seed(0))["train_nats"] for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(before, _ff_weights(model)))
    assert nats[-1] < nats[0]


def _by_hand(twin, strings, offline: bool) -> None:
    """One update written out: the readout step, the positive gradient, and the negatives
    generated (and scored) by the weights before the FF step (combined, one step on both) or
    after the positive step (offline, a second step)."""
    contexts, targets, positives = windows_of(strings, 4)
    twin.readout_step(contexts, targets)
    pos, neg = FFGradient.zeros_like(twin), FFGradient.zeros_like(twin)
    twin.add_ff_gradient(positives, "positive", pos)
    if offline:
        normalized_step(twin.layers, twin.ff_optimizer, [pos])  # wake
    twin.add_ff_gradient(negative_windows(twin, strings, torch.Generator().manual_seed(3)), "negative", neg)
    normalized_step(twin.layers, twin.ff_optimizer, [neg] if offline else [pos, neg])


def _assert_same_ff_weights(a_model, b_model):
    for a, b in zip(_ff_weights(a_model), _ff_weights(b_model)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_combined_is_one_step_on_both_phases_from_the_same_weights():
    strings = _strings()
    model, twin = _model(), _model()
    update(model, strings, "combined", torch.Generator().manual_seed(3))
    _by_hand(twin, strings, offline=False)
    _assert_same_ff_weights(model, twin)


def test_offline_dreams_its_negatives_with_the_updated_weights():
    strings = _strings()
    model, twin = _model(), _model()
    update(model, strings, "offline", torch.Generator().manual_seed(3))
    _by_hand(twin, strings, offline=True)
    _assert_same_ff_weights(model, twin)
    combined = _model()
    update(combined, strings, "combined", torch.Generator().manual_seed(3))
    assert not all(torch.allclose(a, b) for a, b in zip(_ff_weights(model), _ff_weights(combined)))


def test_peer_normalization_adds_footnote_9_to_the_positive_phase_only():
    strings = _strings()
    _, _, positives = windows_of(strings, 4)
    grads = {}
    for peer in (0.0, 0.5):
        model = _model(peer_normalization=peer)
        for phase in ("positive", "negative"):
            grads[peer, phase] = FFGradient.zeros_like(model)
            model.add_ff_gradient(positives, phase, grads[peer, phase])
        moved = not torch.equal(model.layers[0].peer_running_mean, torch.full((16,), 0.5))
        assert moved == (peer > 0)  # the running means move only when it is on
    for i in range(2):
        assert not torch.allclose(grads[0.0, "positive"].biases[i], grads[0.5, "positive"].biases[i])
        torch.testing.assert_close(grads[0.0, "negative"].biases[i], grads[0.5, "negative"].biases[i])


def test_the_softmax_reads_directions_or_activities_whose_length_is_the_goodness():
    strings = _strings()
    contexts, targets, _ = windows_of(strings, 4)
    by_direction, by_activity = _model(), _model(readout_input="activity")
    d, a = by_direction.features(contexts), by_activity.features(contexts)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(len(d)))  # directions only: unit length
    x = by_activity.one_hot(contexts)
    for i, layer in enumerate(by_activity.layers):  # same weights: the same seed
        x = layer(x)
        block_d, block_a = d[:, 16 * i:16 * (i + 1)], a[:, 16 * i:16 * (i + 1)]
        # each layer's block: squared length = goodness / threshold / depth, same direction
        torch.testing.assert_close(2 * block_a.square().sum(1), x.square().sum(1) / layer.threshold)
        torch.testing.assert_close(block_a / block_a.norm(dim=1, keepdim=True),
                                   block_d / block_d.norm(dim=1, keepdim=True))
    nats = [update(by_activity, strings, "offline", torch.Generator().manual_seed(0))["train_nats"] for _ in range(5)]
    assert nats[-1] < nats[0]
    with pytest.raises(ValueError, match="readout_input"):
        NextCharConfig(readout_input="goodness")
