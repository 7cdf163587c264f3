"""Resume points: everything a stopped training run needs to continue exactly where it was.

A run folder's ``resume/`` holds the model (an ordinary checkpoint: ``model.safetensors`` and
``config.json``), every optimizer's state (``optimizers.safetensors``: momentum and Adam moments;
``optimizers.json``: their settings, the learning rates included), the RNG states and the run's
progress (``state.safetensors``, ``state.json``) and how the run was asked for (``run.json``).
Never pickle. A new point is written beside the old one and swapped in by renames, so a run killed
while writing keeps its previous point.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ffcore.checkpoint import load_checkpoint, save_checkpoint
from ffcore.train import TrainState, optimizers_of

RESUME = "resume"


def _flatten_optimizers(model) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors, settings = {}, []
    for i, opt in enumerate(optimizers_of(model)):
        sd = opt.state_dict()
        scalars = {}
        for pid, entries in sd["state"].items():
            for name, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{i}.{pid}.{name}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{pid}.{name}"] = value
        settings.append({"param_groups": sd["param_groups"], "scalars": scalars})
    return tensors, settings


def _restore_optimizers(model, tensors: dict[str, torch.Tensor], settings: list[dict]) -> None:
    optimizers = optimizers_of(model)
    if len(optimizers) != len(settings):
        raise ValueError(f"resume point has {len(settings)} optimizers, the model {len(optimizers)}")
    for i, (opt, saved) in enumerate(zip(optimizers, settings)):
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            index, pid, name = key.split(".", 2)
            if int(index) == i:
                state.setdefault(int(pid), {})[name] = value
        for key, value in saved["scalars"].items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def save_resume_point(directory: str | Path, model, state: TrainState, run: dict) -> Path:
    """Write ``model``, its optimizers, ``state`` and ``run`` (how the run was asked for) to
    ``directory/resume``, replacing the previous point only once the new one is complete."""
    final = Path(directory) / RESUME
    fresh, old = final.with_name(RESUME + ".new"), final.with_name(RESUME + ".old")
    shutil.rmtree(fresh, ignore_errors=True)
    save_checkpoint(model, fresh)
    tensors, settings = _flatten_optimizers(model)
    save_file(tensors, fresh / "optimizers.safetensors")
    (fresh / "optimizers.json").write_text(json.dumps(settings))
    save_file({"generator": state.generator.cpu(), "shuffle": state.shuffle.cpu()}, fresh / "state.safetensors")
    (fresh / "state.json").write_text(json.dumps({"epochs_done": state.epochs_done, "planned": state.planned,
                                                  "elapsed": state.elapsed}))
    (fresh / "run.json").write_text(json.dumps(run, indent=2))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    fresh.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_run(directory: str | Path) -> dict:
    """How the run in ``directory`` was asked for (its ``resume/run.json``); a clear error if the
    folder holds no resume point."""
    path = Path(directory) / RESUME / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} holds no resume point ({RESUME}/run.json): is it a run folder "
                                "written by `ffcore train`?")
    return json.loads(path.read_text())


def load_resume_point(directory: str | Path, device: str | torch.device = "cpu"):
    """``(model, state, run)`` of the resume point in ``directory``, the model on ``device`` with
    its optimizers restored."""
    point = Path(directory) / RESUME
    run = read_run(directory)
    model = load_checkpoint(point, device)
    _restore_optimizers(model, load_file(point / "optimizers.safetensors", device=str(device)),
                        json.loads((point / "optimizers.json").read_text()))
    rng = load_file(point / "state.safetensors")
    progress = json.loads((point / "state.json").read_text())
    state = TrainState(progress["epochs_done"], progress["planned"], progress["elapsed"], rng["generator"],
                       rng["shuffle"])
    return model, state, run
