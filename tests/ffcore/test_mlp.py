import math
import time

import pytest
import torch

from ffcore.data import load_synthetic
from ffcore.mlp import FFMLP, MLPConfig
from ffcore.presets import get_preset
from ffcore.train import evaluate, evaluate_layers, fit


@pytest.fixture(scope="module")
def synthetic():
    return load_synthetic(n_train=3000, n_val=500, n_test=1000, seed=0)


def test_supervised_ff_learns_synthetic_task_within_seconds(synthetic):
    torch.manual_seed(0)
    preset = get_preset("synthetic-ff")
    model = FFMLP(preset.model)
    start = time.perf_counter()
    fit(model, synthetic, epochs=preset.epochs, seed=0, eval_every=100)
    assert time.perf_counter() - start < 60  # generous: a sanity bound, not a speed target
    results = evaluate(model, synthetic.test_x, synthetic.test_y, 10)
    assert results["goodness"]["error"] < 0.06
    assert results["softmax"]["error"] < 0.03
    assert results["softmax"]["macro_f1"] > 0.97


def test_unsupervised_ff_learns_synthetic_task(synthetic):
    # Four epochs of hybrid-image negatives land far apart from seed to seed: measured 0.0, 0.056
    # and 0.119 test error for seeds 0-2 (0.049, 0.146, 0.0 before the closed-form layer step,
    # whose float rounding differs). Chance is 0.9; three seeds make the check steady.
    errors = []
    for seed in range(3):
        torch.manual_seed(seed)
        preset = get_preset("synthetic-ff-unsup")
        model = FFMLP(preset.model)
        fit(model, synthetic, epochs=preset.epochs, seed=seed, eval_every=100)
        errors.append(evaluate(model, synthetic.test_x, synthetic.test_y, 10)["softmax"]["error"])
    assert max(errors) < 0.25 and sum(errors) / 3 < 0.1, errors


def test_label_goodness_shapes_and_layers():
    cfg = MLPConfig(input_dim=36, widths=(8, 8, 8), image_shape=(6, 6))
    assert cfg.goodness_layer_ids == (1, 2)  # all but the first hidden layer (paper 3.3)
    assert cfg.readout_layer_ids == (1, 2)
    model = FFMLP(cfg)
    g = model.label_goodness(torch.rand(5, 36))
    assert g.shape == (5, 10)
    assert model.predict(torch.rand(5, 36)).shape == (5,)
    unsup = MLPConfig(input_dim=36, widths=(8,) * 5, image_shape=(6, 6), mode="unsupervised", negatives="hybrid")
    assert unsup.readout_layer_ids == (2, 3, 4)  # the last three hidden layers (paper 3.2)


def test_label_goodness_equals_per_label_forward_passes():
    torch.manual_seed(0)
    model = FFMLP(MLPConfig(input_dim=36, widths=(8, 8, 8), image_shape=(6, 6)))
    x = torch.rand(4, 36)
    scores = model.label_goodness(x)
    for c in range(10):
        ys = model.activities(model.encode(x, torch.full((4,), c)))
        expected = ys[1].square().sum(1) + ys[2].square().sum(1)
        assert torch.allclose(scores[:, c], expected, rtol=1e-5)


def test_each_layers_label_goodness_is_that_layers_own_pass_and_sums_to_the_classifiers():
    torch.manual_seed(0)
    model = FFMLP(MLPConfig(input_dim=36, widths=(8, 8, 8), image_shape=(6, 6)))
    x = torch.rand(4, 36)
    per_layer = model.layer_label_goodness(x)
    assert per_layer.shape == (3, 4, 10)
    for c in range(10):
        ys = model.activities(model.encode(x, torch.full((4,), c)))
        for i in range(3):
            assert torch.allclose(per_layer[i, :, c], ys[i].square().sum(1), rtol=1e-5)
    assert torch.allclose(per_layer[1:].sum(0), model.label_goodness(x), rtol=1e-5)
    assert torch.equal(model.layer_label_goodness(x, (2,)), per_layer[2:])


def test_per_layer_errors_name_each_layer_and_the_sum_the_model_classifies_with(synthetic):
    torch.manual_seed(0)
    preset = get_preset("synthetic-ff")
    model = FFMLP(preset.model)
    fit(model, synthetic, epochs=preset.epochs, seed=0, eval_every=100)
    errors = evaluate_layers(model, synthetic.test_x, synthetic.test_y)
    layers = len(preset.model.widths)
    assert list(errors)[:layers] == [f"layer {i + 1}" for i in range(layers)]
    summed = "sum of layers " + ", ".join(str(i + 1) for i in preset.model.goodness_layer_ids)
    assert errors[summed] == evaluate(model, synthetic.test_x, synthetic.test_y, 10, ("goodness",))["goodness"]["error"]
    assert all(0 <= e < 0.1 for e in errors.values()), errors  # measured 0-1.2% (chance 90%)
    unsup = FFMLP(MLPConfig(input_dim=36, widths=(8, 8, 8), image_shape=(6, 6), mode="unsupervised", negatives="hybrid"))
    with pytest.raises(ValueError, match="only supervised FF"):
        evaluate_layers(unsup, torch.rand(2, 36), torch.zeros(2, dtype=torch.int64))


def test_unsupervised_model_has_no_label_goodness():
    model = FFMLP(MLPConfig(input_dim=36, widths=(8, 8, 8), image_shape=(6, 6), mode="unsupervised", negatives="hybrid"))
    with pytest.raises(ValueError, match="predicts with \\['softmax'\\], not 'goodness'"):
        model.predict(torch.rand(2, 36), "goodness")
    with pytest.raises(ValueError, match="only supervised FF"):
        model.label_goodness(torch.rand(2, 36))


@pytest.mark.parametrize("changes,message", [
    ({"mode": "semi"}, "mode 'semi'"),
    ({"negatives": "hybrid"}, "supervised FF takes negatives"),
    ({"widths": ()}, "widths must be"),
    ({"image_shape": (5, 5)}, "does not hold input_dim"),
    ({"readout_layers": (7,)}, "readout_layers"),
])
def test_config_refuses_bad_values(changes, message):
    base = dict(input_dim=36, widths=(8, 8), image_shape=(6, 6))
    with pytest.raises(ValueError, match=message):
        MLPConfig(**{**base, **changes})


def test_config_dict_round_trip():
    cfg = get_preset("mnist-ff-unsup-4x2000").model
    assert MLPConfig.from_dict(cfg.to_dict()) == cfg


def test_the_readout_reads_each_layers_direction_at_unit_rms_for_every_goodness_kind():
    """L1-normalized sparse activities are large (units / active units); the readout's input is
    the same direction at unit RMS, so its step size holds for the unsquared goodness too."""
    from ffcore.layers import LayerConfig

    torch.manual_seed(0)
    cfg = MLPConfig(input_dim=24, num_classes=3, widths=(40, 30), image_shape=None,
                    layer=LayerConfig(goodness="max_sum"))
    model = FFMLP(cfg)
    x = model.encode(torch.rand(6, 24))
    ys = model.activities(x)
    ys[1] = torch.rand(6, 30) * (torch.arange(30) < 2) + 0.1 * (torch.arange(30) < 2)  # 2 of 30 units active
    features = model.readout_features(ys)
    assert torch.allclose(features.square().mean(dim=1), torch.ones(6), atol=1e-4)
    direction = ys[1] / ys[1].norm(dim=1, keepdim=True)
    assert torch.allclose(features / features.norm(dim=1, keepdim=True), direction, atol=1e-5)
    assert features.abs().max() <= 30 ** 0.5 + 1e-4  # unit RMS: none above sqrt(units); the L1 scale allowed 30


# Data of different statistics: the recipe must not depend on the input's offset or sparsity.
VARIANTS = {"dense": lambda x: x, "inverted": lambda x: 1 - x, "low-contrast": lambda x: 0.45 + 0.1 * x,
            "sparse": lambda x: x * (x > 0.7)}


def _variant(name: str):
    from dataclasses import replace

    base = load_synthetic(n_train=2000, n_val=200, n_test=500, seed=0)
    f = VARIANTS[name]
    return replace(base, train_x=f(base.train_x), val_x=f(base.val_x), test_x=f(base.test_x))


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("preset", ["synthetic-ff", "synthetic-ff-unsup"])
def test_the_recipe_holds_on_data_of_different_statistics(preset, variant):
    # Measured with centering (seed 0): softmax error 0.0 on dense, inverted and low-contrast,
    # 0.036 on sparse; readout cross-entropy at most 0.18 (chance: ln 10 = 2.30).
    data = _variant(variant)
    torch.manual_seed(0)
    p = get_preset(preset)
    model = FFMLP(p.model)
    records = fit(model, data, epochs=p.epochs, seed=0, eval_every=100)
    assert all(math.isfinite(v) for r in records for v in r.stats.values())
    assert records[-1].stats["readout_loss"] < 0.5
    assert evaluate(model, data.test_x, data.test_y, 10)["softmax"]["error"] < 0.15


def test_without_centering_low_contrast_inputs_stay_near_chance():
    # The control for the test above: 0.45 + 0.1 x normalizes to nearly one direction for every
    # example (measured: softmax error 0.894, readout cross-entropy 2.33, above chance).
    from dataclasses import replace

    data = _variant("low-contrast")
    torch.manual_seed(0)
    p = get_preset("synthetic-ff")
    model = FFMLP(replace(p.model, center_input=False))
    records = fit(model, data, epochs=p.epochs, seed=0, eval_every=100)
    assert records[-1].stats["readout_loss"] > 2.0
    assert evaluate(model, data.test_x, data.test_y, 10)["softmax"]["error"] > 0.5


def test_centering_learns_the_training_inputs_mean_and_a_checkpoint_carries_it(tmp_path):
    from ffcore.checkpoint import load_checkpoint, save_checkpoint

    data = _variant("low-contrast")
    torch.manual_seed(0)
    model = FFMLP(get_preset("synthetic-ff").model)
    fit(model, data, epochs=1, seed=0, eval_every=100)
    assert torch.allclose(model.input_mean, data.train_x.mean(dim=0), atol=1e-4)  # fewer inputs than the horizon
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ck"))
    assert torch.equal(loaded.input_mean, model.input_mean)
    old = {k: v for k, v in model.state_dict().items() if k not in ("input_mean", "input_count")}
    fresh = FFMLP(get_preset("synthetic-ff").model)
    fresh.load_state_dict(old)  # a checkpoint from before centering: zero mean, inputs unchanged
    assert torch.equal(fresh.input_mean, torch.zeros(196)) and torch.equal(fresh.prepare(data.test_x), data.test_x)


@pytest.mark.parametrize("goodness", ["max_ssq", "max_sum"])
@pytest.mark.parametrize("center", [True, False])
def test_the_shared_first_product_takes_the_same_step_as_three_passes(synthetic, goodness, center):
    import copy
    from dataclasses import replace

    p = get_preset("synthetic-ff")
    config = replace(p.model, center_input=center, layer=replace(p.model.layer, goodness=goodness))
    torch.manual_seed(0)
    shared = FFMLP(config)
    separate = copy.deepcopy(shared)
    separate.share_first_product = False
    for start in (0, 100, 200):  # three steps: momentum, peer means and the input mean carried along
        x, y = synthetic.train_x[start:start + 100], synthetic.train_y[start:start + 100]
        a = shared.train_batch(x, y, torch.Generator().manual_seed(start))
        b = separate.train_batch(x, y, torch.Generator().manual_seed(start))
        assert a == pytest.approx(b, rel=1e-4, abs=1e-4)
    for (name, u), v in zip(shared.state_dict().items(), separate.state_dict().values()):
        assert torch.allclose(u, v, rtol=1e-4, atol=1e-5), name


def test_bfloat16_products_keep_the_synthetic_accuracy_within_three_points():
    # The sparse variant after 2 epochs leaves errors to compare (the dense task reaches 0% in
    # both precisions). Measured means over seeds 0-2: goodness 18.1% (float32) vs 17.0%
    # (bfloat16), softmax 6.2% vs 6.9%; single seeds differ by up to 7 points, so three are averaged.
    from dataclasses import replace

    base = load_synthetic(n_train=3000, n_val=100, n_test=1000, seed=0)
    sparse = VARIANTS["sparse"]
    data = replace(base, train_x=sparse(base.train_x), val_x=sparse(base.val_x), test_x=sparse(base.test_x))
    p = get_preset("synthetic-ff")
    means = {}
    for dtype in ("float32", "bfloat16"):
        errors = []
        for seed in range(3):
            torch.manual_seed(seed)
            model = FFMLP(replace(p.model, layer=replace(p.model.layer, matmul_dtype=dtype)))
            fit(model, data, epochs=2, seed=seed, eval_every=100)
            errors.append({k: v["error"] for k, v in evaluate(model, data.test_x, data.test_y, 10).items()})
        means[dtype] = {k: sum(e[k] for e in errors) / 3 for k in errors[0]}
    for method in ("goodness", "softmax"):
        assert abs(means["bfloat16"][method] - means["float32"][method]) <= 0.03, (method, means)
