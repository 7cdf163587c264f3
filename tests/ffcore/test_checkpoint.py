import json

import pytest
import torch

from ffcore.checkpoint import build_model, load_checkpoint, save_checkpoint, to_bytes
from ffcore.data import load_synthetic
from ffcore.presets import get_preset
from ffcore.train import fit


@pytest.mark.parametrize("preset", ["synthetic-ff", "synthetic-ff-unsup", "synthetic-bp"])
def test_round_trip_reproduces_predictions_exactly(tmp_path, preset):
    torch.manual_seed(0)
    p = get_preset(preset)
    data = load_synthetic(n_train=300, n_val=50, n_test=200)
    model = build_model(p.kind, p.model)
    fit(model, data, epochs=1, seed=0)
    save_checkpoint(model, tmp_path / "ckpt", extra={"preset": preset})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config
    assert torch.equal(loaded.predict_proba(data.test_x), model.predict_proba(data.test_x))
    for method in model.predict_methods:
        assert torch.equal(loaded.predict(data.test_x, method), model.predict(data.test_x, method))
    if p.model.mode == "supervised" and p.kind == "ff":
        assert torch.equal(loaded.label_goodness(data.test_x), model.label_goodness(data.test_x))


def test_checkpoint_is_safetensors_and_json_not_pickle(tmp_path):
    model = build_model("ff", get_preset("synthetic-ff").model)
    folder = save_checkpoint(model, tmp_path / "c")
    raw = (folder / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])  # safetensors: u64 length + JSON header
    assert "layers.0.linear.weight" in header
    assert not raw.startswith(b"\x80")  # pickle protocol marker
    assert json.loads((folder / "config.json").read_text())["kind"] == "ff"


def test_loading_a_non_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not an ffcore-checkpoint"):
        load_checkpoint(tmp_path)


def test_a_snapshot_loads_into_a_model_of_the_same_config_in_place():
    from ffcore.checkpoint import load_bytes_into
    from ffcore.recurrent import RecurrentConfig, RecurrentFF

    torch.manual_seed(0)
    a, b = RecurrentFF(RecurrentConfig(input_dim=20, widths=(8, 8))), RecurrentFF(RecurrentConfig(input_dim=20, widths=(8, 8)))
    same = load_bytes_into(b, to_bytes(a))
    assert same is b and all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    other = load_bytes_into(b, to_bytes(RecurrentFF(RecurrentConfig(input_dim=20, widths=(6, 6)))))
    assert other is not b and other.config.widths == (6, 6)  # another config: a new model
    with pytest.raises(ValueError, match="not a model snapshot"):
        load_bytes_into(b, b"junk")


def test_a_recurrent_checkpoint_from_before_the_online_buffers_still_loads():
    from ffcore.recurrent import RecurrentConfig, RecurrentFF

    torch.manual_seed(0)
    old = RecurrentFF(RecurrentConfig(input_dim=20, widths=(8, 8)))
    weights = {k: v for k, v in old.state_dict().items() if k not in ("readout_mean", "input_mean", "input_count")}
    new = RecurrentFF(RecurrentConfig(input_dim=20, widths=(8, 8)))
    new.load_state_dict(weights)  # strict: everything the old file has, the new buffers at their defaults
    assert torch.equal(new.layers[0].linear.weight, old.layers[0].linear.weight)
    assert torch.equal(new.input_mean, torch.zeros(20))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        new.load_state_dict({**weights, "stray": torch.zeros(1)})


def test_a_bfloat16_snapshot_loads_into_float32_weights_rounded():
    from ffcore.checkpoint import from_bytes, to_bytes
    from ffcore.recurrent import RecurrentConfig, RecurrentFF

    torch.manual_seed(0)
    model = RecurrentFF(RecurrentConfig(input_dim=64, widths=(48, 48), num_classes=3))
    full, half = to_bytes(model), to_bytes(model, torch.bfloat16)
    assert len(half) < 0.6 * len(full)
    loaded = from_bytes(half)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype, name
        if a.is_floating_point():
            torch.testing.assert_close(b, a.to(torch.bfloat16).to(a.dtype), rtol=0, atol=0)
