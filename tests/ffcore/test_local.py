import pytest
import torch

from ffcore.backprop import BackpropMLP
from ffcore.checkpoint import load_checkpoint, save_checkpoint
from ffcore.layers import LayerConfig
from ffcore.local import FFMasked, footnote8_masks, location_mask, pixel_mask
from ffcore.mlp import FFMLP, MLPConfig

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
    with pytest.raises(ValueError, match="unsupervised"):
        MLPConfig(**{**FOOTNOTE8, "mode": "supervised", "negatives": "hard"})
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
