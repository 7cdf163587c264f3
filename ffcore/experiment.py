"""Run a preset end to end: load data, train, evaluate, write the run folder.

A run folder holds ``metrics.jsonl`` (one JSON line per epoch), ``report.json`` (the final
numbers with hardware and date), ``learning_curve.png`` and ``checkpoint/``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from ffcore.checkpoint import build_model, save_checkpoint
from ffcore.data.datasets import Splits, load_dataset
from ffcore.device import resolve_device
from ffcore.plots import plot_learning_curve, plot_receptive_fields
from ffcore.presets import Preset
from ffcore.resume import load_resume_point, save_resume_point
from ffcore.train import EpochRecord, TrainState, evaluate, fit


def hardware() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_results(path: str | Path, args, **payload) -> Path:
    """A benchmark's JSON: the date, this machine, the command's arguments, then ``payload``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
                                "args": {k: str(v) for k, v in vars(args).items()}, **payload}, indent=2))
    print(f"wrote {path}")
    return path


def peak_memory_mb(device: torch.device) -> dict:
    """Peak resident memory of this process (CPU) and peak CUDA allocation, in MiB."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_preset(
    preset: Preset,
    *,
    data_dir: str | Path | None,
    out: str | Path,
    device: str = "auto",
    seed: int = 0,
    eval_every: int = 1,
    data: Splits | None = None,
    on_batch: Callable | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    time_budget_s: float | None = None,
    resume: bool = False,
    run: dict | None = None,
) -> dict:
    """Train ``preset`` and write its run folder to ``out``; returns the report.
    ``time_budget_s``: fewer epochs than the preset's when they would not fit (``fit``).
    After every epoch the folder's ``resume/`` is brought up to date (ffcore.resume), with ``run``
    (how the run was asked for) beside it; ``resume=True`` continues the run in ``out`` from there."""
    dev = resolve_device(device)
    torch.manual_seed(seed)
    data = (data or load_dataset(preset.dataset, data_dir, seed=seed)).to(dev)
    config = preset.model
    if config.input_dim != data.input_dim or config.num_classes < data.num_classes:
        raise ValueError(
            f"preset {preset.name} expects {config.input_dim}-dim inputs and {config.num_classes} classes; "
            f"the data has {data.input_dim} and {data.num_classes}"
        )
    out = Path(out)
    log_path = out / "metrics.jsonl"
    if resume:
        model, state, _ = load_resume_point(out, dev)
        # epochs logged after the resume point (a run stopped while saving it) are trained again
        history = [json.loads(line) for line in log_path.read_text().splitlines()][: state.epochs_done]
    else:
        model, state, history = build_model(preset.kind, config).to(dev), TrainState(), []
    out.mkdir(parents=True, exist_ok=True)
    log_path.write_text("".join(json.dumps(line) + "\n" for line in history))
    run = {"preset": preset.name, "seed": seed, "eval_every": eval_every, **(run or {})}

    def log_epoch(record: EpochRecord) -> None:
        line = asdict(record)
        history.append(line)
        with log_path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        save_resume_point(out, model, state, run)
        if on_epoch:
            on_epoch(record)

    fit(model, data, epochs=preset.epochs, batch_size=preset.batch_size, seed=seed, eval_every=eval_every,
        on_batch=on_batch, on_epoch=log_epoch, jitter=preset.jitter, time_budget_s=time_budget_s, state=state)
    train_seconds = sum(r["seconds"] for r in history)
    test_start = time.perf_counter()
    test = evaluate(model, data.test_x, data.test_y, data.num_classes)
    wall = state.elapsed + time.perf_counter() - test_start  # every session of a resumed run
    report = {
        "preset": preset.name,
        "kind": preset.kind,
        "dataset": preset.dataset,
        "widths": list(preset.model.widths),
        "epochs": len(history),
        "epochs_requested": preset.epochs,
        "time_budget_s": time_budget_s,
        "batch_size": preset.batch_size,
        "jitter": preset.jitter,
        "seed": seed,
        "device": str(dev),
        "parameters": count_parameters(model),
        "test": test,
        "final_val_error": history[-1]["val_error"],
        "wall_seconds": wall,
        "train_seconds": train_seconds,
        "train_samples_per_second": len(data.train_x) * len(history) / train_seconds,
        **peak_memory_mb(dev),
        "hardware": hardware(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "paper_result": preset.paper_result,
        "run": run,
    }
    save_checkpoint(model, out / "checkpoint", extra={"preset": preset.name, "test": test})
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot_learning_curve(history, out / "learning_curve.png", title=f"{preset.name} ({dev})")
    first = model.layers[0]
    weight = first.linear.weight if hasattr(first, "linear") else getattr(first, "weight", None)
    if weight is not None:  # the first layer's receptive fields, as in the paper's figure 2
        plot_receptive_fields(weight, data.image_shape, out / "receptive_fields.png", title=preset.name)
    return report
