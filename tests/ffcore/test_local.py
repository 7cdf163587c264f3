import pytest
import torch

from ffcore.backprop import BackpropMLP
from ffcore.checkpoint import load_checkpoint, save_checkpoint
from ffcore.layers import LayerConfig
from ffcore.local import FFMasked, footnote8_masks, location_mask, map_mask, pixel_mask, recurrent_masks, topographic_masks
from ffcore.mlp import FFMLP, MLPConfig
from ffcore.online import OnlineConfig, OnlineLearner, negative_gradient
from ffcore.recurrent import RecurrentConfig, RecurrentFF

FOOTNOTE8 = dict(input_dim=784, widths=(2048, 1980, 2048), mode="unsupervised", negatives="hybrid",
                 image_shape=(28, 28), receptive_fields="footnote8")


def test_the_footnote_8_layout():
    m1, m2, m3 = footnote8_masks()
    assert m1.shape == (2048, 784) and m2.shape == (1980, 2048) and m3.shape == (2048, 1980)
    assert set(m1.sum(dim=1).tolist()) == {100.0}  # 10 x 10 fields
    assert set(m2.sum(dim=1).tolist()) == {4 * 128.0} and set(m3.sum(dim=1).tolist()) == {4 * 220.0}
    field = m1[(1 * 4 + 2) * 128].reshape(28, 28)  # location (1, 2), its first channel
    assert field[6:16, 12:22].all() and field.sum() == 100
    # layer 2's location (2, 0) sees layer 1's locations (2, 0), (2, 1), (3, 0), (3, 1)
    seen = m2[(2 * 3 + 0) * 220].reshape(16, 128)[:, 0].nonzero().squeeze(1).tolist()
    assert seen == [8, 9, 12, 13]
    with pytest.raises(ValueError, match="does not fit"):
        pixel_mask((28, 28), grid=5, stride=6, field=10, channels=1)
    with pytest.raises(ValueError, match="needs a 4 x 4 grid below"):
        location_mask(in_grid=3, in_channels=1, grid=3, span=2, channels=1)


def test_the_masked_layer_equals_an_explicit_locally_connected_computation():
    torch.manual_seed(0)
    grid, stride, field, channels = 3, 4, 6, 5
    layer = FFMasked(pixel_mask((14, 14), grid, stride, field, channels), threshold=1.0, config=LayerConfig())
    x = torch.rand(7, 196)
    z = layer.pre_activation(x)
    x_norm = layer.normalized_input(x).reshape(7, 14, 14)
    w, b = layer.linear.weight.reshape(grid * grid, channels, 14, 14), layer.linear.bias.reshape(grid * grid, channels)
    for i in range(grid):
        for j in range(grid):
            rows, cols = slice(i * stride, i * stride + field), slice(j * stride, j * stride + field)
            patch = x_norm[:, rows, cols].reshape(7, -1)  # the location's own field
            weights = w[i * grid + j][:, rows, cols].reshape(channels, -1)  # its own weights: no sharing
            explicit = patch @ weights.T + b[i * grid + j]
            assert torch.allclose(z.reshape(7, grid * grid, channels)[:, i * grid + j], explicit, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weights_outside_the_fields_stay_zero_while_training(optimizer):
    torch.manual_seed(0)
    cfg = MLPConfig(**FOOTNOTE8, layer=LayerConfig(optimizer=optimizer, lr=1e-2, weight_decay=1e-3,
                                                   peer_normalization=0.03))
    model = FFMLP(cfg)
    x = torch.rand(8, 784)
    before = [layer.linear.weight.detach().clone() for layer in model.layers]
    for _ in range(3):
        model.train_batch(x, torch.zeros(8, dtype=torch.long))
    for layer, w0 in zip(model.layers, before):
        outside = layer.mask == 0
        assert not torch.equal(w0, layer.linear.weight)  # it learns ...
        assert (layer.linear.weight[outside] == 0).all()  # ... only inside the fields


def test_the_backprop_twin_has_the_same_connectivity_and_keeps_it():
    torch.manual_seed(0)
    cfg = MLPConfig(**FOOTNOTE8, layer=LayerConfig(optimizer="adam", lr=1e-3, weight_decay=0.0))
    bp = BackpropMLP(cfg)
    assert sum(p.numel() for p in bp.layers.parameters()) == sum(p.numel() for p in FFMLP(cfg).layers.parameters())
    bp.train_batch(torch.rand(8, 784), torch.randint(0, 10, (8,)))
    for layer in bp.layers:
        assert (layer.weight[layer.mask == 0] == 0).all()


def test_the_layout_is_checked_and_round_trips_through_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="make layers of"):
        MLPConfig(**{**FOOTNOTE8, "widths": (2048, 2048, 2048)})
    with pytest.raises(ValueError, match="unsupervised"):  # FF puts the label in the image; backprop may
        FFMLP(MLPConfig(**{**FOOTNOTE8, "mode": "supervised", "negatives": "hard"}))
    with pytest.raises(ValueError, match="unknown receptive-field layout"):
        MLPConfig(**{**FOOTNOTE8, "receptive_fields": "nope"})
    torch.manual_seed(0)
    model = FFMLP(MLPConfig(**FOOTNOTE8))
    save_checkpoint(model, tmp_path / "ckpt")
    again = load_checkpoint(tmp_path / "ckpt")
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert isinstance(again.layers[0], FFMasked) and torch.equal(again.layers[1].mask, model.layers[1].mask)


def test_the_locally_connected_gradient_is_the_dense_gradient_inside_the_fields():
    torch.manual_seed(0)
    mask = location_mask(in_grid=3, in_channels=4, grid=2, span=2, channels=6)
    layer = FFMasked(mask, threshold=1.0, config=LayerConfig())
    dz, x_norm = torch.randn(5, mask.shape[0]), torch.randn(5, mask.shape[1])
    assert torch.allclose(layer.weight_gradient(dz, x_norm), (dz.T @ x_norm) * mask, atol=1e-5)
    z_dense = x_norm @ (layer.linear.weight * mask).T + layer.linear.bias
    assert torch.allclose(layer.connect(x_norm), z_dense, atol=1e-5)


# ---- topographic maps (the CIFAR-10 layout of paper section 4), at 12 x 12 x 3 for speed ---------

SMALL_MAP = dict(input_dim=432, image_shape=(12, 12), widths=(432, 432), receptive_fields="topographic11")


def test_a_topographic_map_reads_centred_fields_truncated_at_the_edges():
    m = map_mask((32, 32, 3), 3, 11)
    assert m.shape == (3072, 3072)
    counts = m.sum(dim=1).view(32, 32, 3)
    assert counts[16, 16, 0] == 11 * 11 * 3 and counts[0, 0, 2] == 6 * 6 * 3 and counts[0, 16, 1] == 6 * 11 * 3
    row = m[(2 * 32 + 3) * 3 + 1].view(32, 32, 3)  # location (2, 3), channel 1: rows 0-7, columns 0-8
    assert row[:8, :9].all() and row.sum() == 8 * 9 * 3
    planes = map_mask((32, 32, 3), 3, 11, channel_major=True)  # an image: R, G, B planes
    assert torch.equal(planes[(2 * 32 + 3) * 3 + 1].view(3, 32, 32), row.permute(2, 0, 1))
    with pytest.raises(ValueError, match="odd size"):
        map_mask((4, 4, 1), 1, 4)


def test_the_recurrent_layout_reads_the_map_above_through_the_same_fields():
    masks = recurrent_masks("topographic11", (32, 32), 3072, 3, 10)
    assert [tuple(m.shape) for m in masks] == [(3072, 6144), (3072, 6144), (3072, 3082)]
    up = topographic_masks((32, 32), 3072, 3)
    for i in range(3):
        assert torch.equal(masks[i][:, :3072], up[i])  # bottom-up
    assert torch.equal(masks[0][:, 3072:], up[1].T) and torch.equal(masks[1][:, 3072:], up[2].T)  # top-down
    assert masks[2][:, 3072:].all()  # the last layer reads every label
    with pytest.raises(ValueError, match="for the recurrent net"):
        recurrent_masks("footnote8", (28, 28), 784, 3, 10)


def test_a_masked_recurrent_net_learns_only_inside_its_fields_in_every_phase_and_path():
    torch.manual_seed(0)
    model = RecurrentFF(RecurrentConfig(**SMALL_MAP, iterations=3, eval_window=(2, 3),
                                        layer=LayerConfig(lr=0.05, momentum=0.9, weight_decay=1e-3)))
    before = [layer.linear.weight.detach().clone() for layer in model.layers]
    x, y = torch.rand(16, 432), torch.randint(0, 10, (16,))
    model.train_batch(x, y)  # positive steps (closed form) and negative deltas
    learner = OnlineLearner(model, OnlineConfig(lr=1.0))
    state = model.initial_state(x)
    learner.learn_step(x, y, state)
    learner.apply(learner.take_positive())  # the service's positive step
    learner.apply(negative_gradient(model, x, (y + 1) % 10, iterations=3))  # and its negatives from sleep
    for layer, w0 in zip(model.layers, before):
        inside = layer.mask.bool()
        assert not torch.equal(w0[inside], layer.linear.weight[inside])
        assert (layer.linear.weight[~inside] == 0).all()
        assert layer.fan_in == int(layer.mask.sum(dim=1).max())


def test_a_masked_recurrent_net_round_trips_through_a_checkpoint_and_checks_its_widths(tmp_path):
    torch.manual_seed(0)
    model = RecurrentFF(RecurrentConfig(**SMALL_MAP, iterations=3, eval_window=(2, 3)))
    save_checkpoint(model, tmp_path / "ckpt")
    again = load_checkpoint(tmp_path / "ckpt")
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert torch.equal(again.layers[1].mask, model.layers[1].mask)
    with pytest.raises(ValueError, match="make layers of"):
        RecurrentConfig(**{**SMALL_MAP, "widths": (500, 500)})
    with pytest.raises(ValueError, match="need image_shape"):
        RecurrentConfig(**{**SMALL_MAP, "image_shape": None})


def test_the_topographic_backprop_twin_has_the_bottom_up_fields_of_the_ff_net():
    cfg = MLPConfig(**SMALL_MAP, readout_layers=(0, 1))
    ff = RecurrentFF(RecurrentConfig(**SMALL_MAP))
    bp = BackpropMLP(cfg)
    for b, f in zip(bp.layers, ff.layers):
        assert torch.equal(b.mask, f.mask[:, :432])
    with pytest.raises(ValueError, match="unsupervised FF"):
        FFMLP(cfg)  # supervised FF puts the label in the image: no place in a field


def test_a_topographic_recurrent_net_learns_the_label_goodness_of_coloured_shapes():
    """The CIFAR-10 architecture at 12 x 12 x 3, on shapes in a random tint per image: after FF
    training the goodness with each label clamped on top names the class; with the FF layers left
    as they started (the control) it cannot."""
    from ffcore.data.datasets import Splits
    from ffcore.data.synthetic import make_synthetic
    from ffcore.train import evaluate, fit

    def tinted(n, seed):
        x, y = make_synthetic(n, image_shape=(12, 12), seed=seed)
        tint = torch.rand(n, 3, 1, generator=torch.Generator().manual_seed(seed))
        return (x[:, None, :] * tint).reshape(n, -1), y  # R, G, B planes

    (tx, ty), (sx, sy) = tinted(1000, 0), tinted(500, 1)
    data = Splits(tx, ty, sx, sy, sx, sy, num_classes=10, image_shape=(12, 12))
    errors = {}
    for lr in (1e-12, 3e-3):  # 1e-12: the FF layers stay as they started (the frozen control)
        torch.manual_seed(0)
        model = RecurrentFF(RecurrentConfig(**SMALL_MAP, iterations=4, eval_window=(3, 4), center_input=True,
                                            layer=LayerConfig(lr=lr, momentum=0.9, weight_decay=3e-4)))
        fit(model, data, epochs=3, batch_size=50, eval_every=3)
        errors[lr] = evaluate(model, sx, sy, 10, methods=("goodness",))["goodness"]["error"]
    assert errors[3e-3] < 0.1 and errors[1e-12] > 0.5, errors
