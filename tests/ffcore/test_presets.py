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
