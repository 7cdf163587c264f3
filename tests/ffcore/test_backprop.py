import torch

from ffcore.backprop import BackpropMLP
from ffcore.data import load_synthetic
from ffcore.mlp import FFMLP
from ffcore.presets import PRESETS, get_preset
from ffcore.train import evaluate, fit


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_backprop_baseline_has_identical_architecture_and_parameter_count():
    for ff_name, bp_name in [("mnist-ff-4x2000", "mnist-bp-4x2000"), ("mnist-ff-cpu", "mnist-bp-cpu"),
                             ("synthetic-ff", "synthetic-bp")]:
        ff_cfg, bp_cfg = PRESETS[ff_name].model, PRESETS[bp_name].model
        assert ff_cfg.widths == bp_cfg.widths and ff_cfg.readout_layer_ids == bp_cfg.readout_layer_ids
        if ff_name == "synthetic-ff":
            ff, bp = FFMLP(ff_cfg), BackpropMLP(bp_cfg)
            assert _params(ff) == _params(bp)
            shapes = lambda m: [tuple(p.shape) for p in m.parameters()]
            assert shapes(ff) == shapes(bp)


def test_backprop_learns_synthetic_task():
    torch.manual_seed(0)
    data = load_synthetic(n_train=2000, n_val=200, n_test=1000)
    model = BackpropMLP(get_preset("synthetic-bp").model)
    history = fit(model, data, epochs=2, seed=0)
    assert history[-1].train_loss < history[0].train_loss
    result = evaluate(model, data.test_x, data.test_y, 10)["softmax"]
    assert result["error"] < 0.03 and result["macro_f1"] > 0.97
