import resource

import pytest
import torch

from ffcore.checkpoint import from_bytes, to_bytes
from ffcore.data import load_synthetic
from ffcore.delta import WeightDelta
from ffcore.layers import LayerConfig
from ffcore.recurrent import RecurrentConfig, RecurrentFF
from ffcore.state import RecurrentState
from ffcore.train import evaluate, fit

SGD = LayerConfig(optimizer="sgd", lr=3e-3, momentum=0.9, weight_decay=3e-4, peer_normalization=0.03)


def _model(widths=(16, 12), d=20, c=4, seed=0, **kw):
    torch.manual_seed(seed)
    return RecurrentFF(RecurrentConfig(input_dim=d, num_classes=c, widths=widths, layer=SGD, **kw))


def test_damped_synchronous_update_arithmetic():
    model = _model(damping=0.3)
    frames, labels = torch.rand(3, 20), torch.tensor([0, 3, -1])
    state = model.initial_state(frames)
    new, goodness = model.step(frames, labels, state)
    top = model.label_vector(labels, 3, "cpu")
    y0, y1 = state.activities
    # every layer reads the PREVIOUS state of its neighbours (synchronous), then damps: 0.3 old + 0.7 new
    computed0 = model.layers[0](torch.cat((frames, y1), 1))
    computed1 = model.layers[1](torch.cat((y0, top), 1))
    assert torch.allclose(new.activities[0], 0.3 * y0 + 0.7 * computed0, atol=1e-6)
    assert torch.allclose(new.activities[1], 0.3 * y1 + 0.7 * computed1, atol=1e-6)
    assert torch.allclose(goodness, torch.stack([a.square().sum(1) for a in new.activities], 1))
    assert torch.allclose(top[2], torch.full((4,), 0.1))  # -1: neutral label on top


def test_initial_state_is_one_bottom_up_pass():
    model = _model()
    frames = torch.rand(2, 20)
    state = model.initial_state(frames)
    y0 = model.layers[0](torch.cat((frames, torch.zeros(2, 12)), 1))
    assert torch.allclose(state.activities[0], y0)
    assert state.widths == (16, 12) and len(state) == 2


def test_batched_step_equals_stepping_each_stream_alone():
    model = _model()
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(5, 20, generator=g)
    labels = torch.tensor([0, 1, -1, 3, 2])
    state = model.initial_state(torch.rand(5, 20, generator=g))
    batched, gb = model.step(frames, labels, state)
    for s in range(5):
        alone, ga = model.step(frames[s : s + 1], labels[s : s + 1], state.index([s]))
        for a, b in zip(alone.activities, batched.index([s]).activities):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
        assert torch.allclose(ga, gb[s : s + 1], atol=1e-5, rtol=1e-5)


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_no_history_memory_stays_flat_over_iterations():
    model = _model(widths=(256, 256), d=64, c=10)
    frames, labels = torch.rand(64, 64), torch.randint(0, 10, (64,))
    state = model.initial_state(frames)
    for _ in range(20):  # warm up allocator caches
        state, _ = model.positive_update(frames, labels, state)
    before = _rss_mb()
    for _ in range(300):
        state, _ = model.positive_update(frames, labels, state)
        state = model.negative_update(frames, (labels + 1) % 10, state)
    grown = _rss_mb() - before
    # keeping each iteration's activities would cost 300 * 2 * 64 * 256 * 4 B * 2 phases = 75 MiB
    assert grown < 15, f"memory grew by {grown:.1f} MiB over 300 iterations"
    assert all(y.grad_fn is None and not y.requires_grad for y in state.activities)
    assert state.widths == (256, 256) and len(state) == 64


def test_label_goodness_inference_learns_a_synthetic_task():
    torch.manual_seed(0)
    data = load_synthetic(n_train=2000, n_val=200, n_test=500)
    config = RecurrentConfig(input_dim=196, widths=(128, 128), iterations=4, eval_window=(3, 4), layer=SGD)
    model = RecurrentFF(config)
    fit(model, data, epochs=2, seed=0, eval_every=100)
    result = evaluate(model, data.test_x, data.test_y, 10)
    assert result["goodness"]["error"] < 0.05
    assert result["softmax"]["error"] < 0.05
    scores = model.label_goodness(data.test_x[:8])
    assert scores.shape == (8, 10)


def test_delta_from_a_snapshot_applied_later_equals_the_direct_negative_update():
    live = _model()
    g = torch.Generator().manual_seed(2)
    frames, neg = torch.rand(6, 20, generator=g), torch.randint(0, 4, (6,), generator=g)
    state = live.initial_state(frames)
    direct = from_bytes(to_bytes(live))  # an identical copy that takes the direct update
    snapshot = from_bytes(to_bytes(live))  # the sleep worker's view: a snapshot of the weights
    delta, _ = snapshot.negative_delta(frames, neg, state)
    wire = WeightDelta.from_bytes(delta.to_bytes())  # it travels as safetensors bytes
    assert all(torch.equal(p, q) for p, q in zip(snapshot.parameters(), live.parameters()))  # untouched
    direct.negative_update(frames, neg, state)
    live.apply_delta(wire)
    for (name, a), b in zip(live.named_parameters(), direct.parameters()):
        assert torch.allclose(a, b, atol=1e-7), name
    assert any(not torch.equal(a, b) for a, b in zip(live.parameters(), snapshot.parameters()))


def test_delta_is_the_plain_sgd_step_of_the_negative_loss():
    model = _model(negative_lr=0.01)
    frames, neg = torch.rand(4, 20), torch.tensor([1, 2, 3, 0])
    state = model.initial_state(frames)
    delta, _ = model.negative_delta(frames, neg, state)
    top = model.label_vector(neg, 4, "cpu")
    x = torch.cat((frames, state.activities[1]), 1)
    loss, _, _ = model.layers[0].local_loss(None, x)
    gw, gb = torch.autograd.grad(loss, [model.layers[0].linear.weight, model.layers[0].linear.bias])
    dw, db = delta.dense()[0]
    assert torch.allclose(dw, -0.01 * gw, atol=1e-7) and torch.allclose(db, -0.01 * gb, atol=1e-7)
    assert top.shape == (4, 4)
    # compact: rank-B factors instead of the dense matrix
    left, right = delta.factors[0]
    assert left.shape == (4, 16) and right.shape == (4, 32)


def test_state_serialization_round_trip_and_stream_bookkeeping():
    model = _model()
    state = model.initial_state(torch.rand(4, 20))
    restored = RecurrentState.from_bytes(state.to_bytes())
    assert all(torch.equal(a, b) for a, b in zip(state.activities, restored.activities))
    grown = RecurrentState.cat([state, model.initial_state(torch.rand(2, 20))])
    assert len(grown) == 6
    shrunk = grown.drop([0, 5])
    assert len(shrunk) == 4 and torch.equal(shrunk.activities[0][0], state.activities[0][1])
    part = grown.index([1, 2]).clone()
    part.activities[0].zero_()
    grown.scatter([1, 2], part)
    assert grown.activities[0][1:3].abs().sum() == 0
    with pytest.raises(ValueError, match="not a serialized recurrent state"):
        RecurrentState.from_bytes(b"garbage")


@pytest.mark.parametrize("changes,message", [
    ({"damping": 1.0}, "damping"),
    ({"eval_window": (4, 9)}, "eval_window"),
    ({"negatives": "hybrid"}, "negatives"),
])
def test_config_refuses_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        RecurrentConfig(**changes)


def test_snapshot_bytes_refuse_garbage():
    with pytest.raises(ValueError, match="not a model snapshot"):
        from_bytes(b"\x00" * 16)


def test_malformed_deltas_are_refused():
    model = _model()
    with pytest.raises(ValueError, match="not a serialized weight delta"):
        WeightDelta.from_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="delta has 1 layers, the model has 2"):
        model.apply_delta(WeightDelta([(torch.zeros(1, 16), torch.zeros(1, 32))]))
    with pytest.raises(ValueError, match="do not fit weight"):
        model.apply_delta(WeightDelta([(torch.zeros(1, 16), torch.zeros(1, 5)), (torch.zeros(1, 12), torch.zeros(1, 20))]))
    assert not WeightDelta([(torch.tensor([[float("inf")]]), torch.ones(1, 1))]).is_finite()
