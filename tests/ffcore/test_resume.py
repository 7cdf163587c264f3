import json

import pytest
import torch
from typer.testing import CliRunner

from ffcore.cli import app
from ffcore.data import load_synthetic
from ffcore.experiment import run_preset
from ffcore.presets import get_preset
from ffcore.resume import load_resume_point


class Stop(Exception):
    """Stands for the run being killed after an epoch."""


@pytest.fixture(scope="module")
def data():
    return load_synthetic(n_train=600, n_val=200, n_test=300, seed=0)


def _weights(folder):
    model, _, _ = load_resume_point(folder)
    return model.state_dict()


@pytest.mark.parametrize("name", ["synthetic-ff", "synthetic-ff-unsup", "synthetic-bp"])
def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path, data, name):
    preset = get_preset(name).with_overrides(epochs=4)
    whole = run_preset(preset, data_dir=None, out=tmp_path / "whole", device="cpu", data=data)

    def stop_after_two(record):
        if record.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        run_preset(preset, data_dir=None, out=tmp_path / "split", device="cpu", data=data, on_epoch=stop_after_two)
    assert len((tmp_path / "split" / "metrics.jsonl").read_text().splitlines()) == 2
    resumed = run_preset(preset, data_dir=None, out=tmp_path / "split", device="cpu", data=data, resume=True)

    assert resumed["test"] == whole["test"] and resumed["epochs"] == 4
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)  # momentum, Adam moments, RNG and lr schedule restored
    curves = [[json.loads(line)["val_error"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("whole", "split")]
    assert curves[0] == curves[1]


def test_epochs_logged_after_the_resume_point_are_trained_again(tmp_path, data):
    preset = get_preset("synthetic-ff").with_overrides(epochs=3)
    run_preset(preset, data_dir=None, out=tmp_path, device="cpu", data=data)
    with (tmp_path / "metrics.jsonl").open("a") as f:  # a line the resume point does not cover
        f.write(json.dumps({"epoch": 4, "val_error": {}, "seconds": 1.0}) + "\n")
    report = run_preset(preset, data_dir=None, out=tmp_path, device="cpu", data=data, resume=True)
    assert report["epochs"] == 3 and len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


runner = CliRunner()


def test_cli_resume_continues_the_run_as_it_was_asked_for(tmp_path):
    out = tmp_path / "run"
    first = runner.invoke(app, ["train", "--preset", "synthetic-ff", "--epochs", "2", "--out", str(out), "--quiet"])
    assert first.exit_code == 0, first.output
    before = json.loads((out / "report.json").read_text())
    again = runner.invoke(app, ["train", "--resume", str(out), "--quiet"])
    assert again.exit_code == 0, again.output
    after = json.loads((out / "report.json").read_text())
    assert after["test"] == before["test"] and after["epochs"] == 2  # nothing left to train
    assert after["run"]["overrides"]["epochs"] == 2 and len(after["run"]["resumed"]) == 1
    assert after["run"]["versions"]["torch"] == torch.__version__ and "cpu_count" in after["run"]["hardware"]


def test_cli_resume_errors_are_one_clear_line(tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(tmp_path), "--quiet"])
    assert result.exit_code == 2 and "holds no resume point" in result.output
    result = runner.invoke(app, ["train", "--preset", "synthetic-ff", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not both" in result.output
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2 and "--preset" in result.output
