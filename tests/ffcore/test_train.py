import pytest
import torch

from ffcore.data import load_synthetic
from ffcore.mlp import FFMLP
from ffcore.presets import get_preset
from ffcore.train import cooldown_factor, fit, plan_epochs


def test_without_a_budget_the_plan_is_what_was_asked():
    assert plan_epochs(60, 1, 1000.0, None, 60) == 60


def test_a_budget_cuts_the_epochs_to_what_fits_at_the_pace_so_far():
    assert plan_epochs(60, 1, 10.0, 1000.0, 60) == 60  # 100 would fit: never more than asked
    assert plan_epochs(60, 1, 10.0, 300.0, 60) == 30
    assert plan_epochs(60, 2, 30.0, 300.0, 30) == 20  # slower than the first epoch said: re-planned
    assert plan_epochs(60, 3, 200.0, 100.0, 20) == 3  # already over: stop after this epoch


def test_the_plan_is_frozen_once_the_cool_down_has_begun():
    assert plan_epochs(60, 10, 300.0, 310.0, 20) == 20


def test_fit_under_a_budget_trains_fewer_epochs_and_still_cools_down(monkeypatch):
    data = load_synthetic(n_train=400, n_val=100, n_test=100, seed=0)
    preset = get_preset("synthetic-ff")
    torch.manual_seed(0)
    model = FFMLP(preset.model)
    clock = [0.0]  # a clock that advances one second per batch: 4 batches an epoch
    monkeypatch.setattr("ffcore.train.time.perf_counter", lambda: clock[0])
    factors = []

    def on_batch(epoch, b, stats):
        clock[0] += 1.0
        if b == 0:
            factors.append(model.layers[0].optimizer.param_groups[0]["lr"] / preset.model.layer.lr)

    records = fit(model, data, epochs=20, batch_size=100, on_batch=on_batch, time_budget_s=24.0)
    assert [r.epochs_planned for r in records][-1] == len(records) == 6
    assert factors == pytest.approx([cooldown_factor(e, 6) for e in range(6)])
    assert records[-1].val_error  # the last epoch of a cut run is validated


def test_a_non_positive_budget_is_a_clear_error():
    data = load_synthetic(n_train=200, n_val=100, n_test=100, seed=0)
    with pytest.raises(ValueError, match="time_budget_s must be > 0"):
        fit(FFMLP(get_preset("synthetic-ff").model), data, epochs=1, time_budget_s=0)
