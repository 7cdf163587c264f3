import pytest

from ffcore.checkpoint import build_model
from ffcore.presets import PRESETS, get_preset


def test_paper_presets_are_registered_with_the_paper_settings():
    sup, unsup = PRESETS["mnist-ff-4x2000"], PRESETS["mnist-ff-unsup-4x2000"]
    assert sup.model.widths == (2000,) * 4 and sup.epochs == 60 and sup.model.negatives == "hard"
    assert unsup.model.mode == "unsupervised" and unsup.epochs == 100 and unsup.model.readout_layer_ids == (1, 2, 3)
    assert PRESETS["mnist-bp-4x2000"].kind == "bp"


@pytest.mark.parametrize("name", [n for n in PRESETS if n.startswith("synthetic") or n.endswith("cpu")])
def test_every_small_preset_builds(name):
    p = PRESETS[name]
    model = build_model(p.kind, p.model)
    assert sum(x.numel() for x in model.parameters()) > 0


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="unknown preset 'mnist-ff'; choose one of: mnist-ff-4x2000"):
        get_preset("mnist-ff")


def test_the_cifar10_presets_follow_table_1():
    ff = {n: p for n, p in PRESETS.items() if n.startswith("cifar10-ff")}
    assert sorted(ff) == ["cifar10-ff-2x3072-max", "cifar10-ff-2x3072-min", "cifar10-ff-3x3072-max",
                          "cifar10-ff-3x3072-min"]
    for name, p in ff.items():
        depth, sign = int(name.split("-")[2][0]), name.split("-")[-1]
        m = p.model
        assert p.kind == "recurrent" and p.dataset == "cifar10" and m.widths == (3072,) * depth
        assert m.receptive_fields == "topographic11" and m.layer.goodness == f"{sign}_ssq"
        assert (m.iterations, m.eval_window) == (10, (4, 6))  # 10 iterations, goodness over 4 to 6
    for depth in (2, 3):
        bp = PRESETS[f"cifar10-bp-{depth}x3072"]
        assert bp.kind == "bp" and bp.model.receptive_fields == "topographic11" and bp.model.layer.weight_decay > 0


@pytest.mark.parametrize("name", ["cifar10-ff-2x3072-min", "cifar10-bp-2x3072"])
def test_a_cifar10_preset_trains_end_to_end_on_files_of_the_binary_format(tmp_path, name):
    """Reader, preset, training, both classifiers and the run folder, on generated files (no copy
    of CIFAR-10 here): 60,000 random records written as the binary version, 100 of them trained on."""
    import numpy as np

    from ffcore.data.cifar import write_folder
    from ffcore.data.datasets import load_dataset
    from ffcore.experiment import run_preset

    rng = np.random.default_rng(0)
    write_folder(tmp_path / "cifar", rng.integers(0, 256, (60_000, 3072), dtype=np.uint8),
                 rng.integers(0, 10, 60_000))
    data = load_dataset("cifar10", tmp_path / "cifar")
    data.train_x, data.train_y = data.train_x[:100], data.train_y[:100]
    data.val_x, data.val_y, data.test_x, data.test_y = data.val_x[:30], data.val_y[:30], data.test_x[:30], data.test_y[:30]
    report = run_preset(PRESETS[name].with_overrides(epochs=1, batch_size=50), data_dir=None, data=data,
                        out=tmp_path / "run")
    methods = {"recurrent": {"goodness", "softmax"}, "bp": {"softmax"}}[PRESETS[name].kind]
    assert set(report["test"]) == methods and all(0 <= r["error"] <= 1 for r in report["test"].values())
    assert (tmp_path / "run" / "checkpoint").is_dir() and report["epochs"] == 1
