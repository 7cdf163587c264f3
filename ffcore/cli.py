"""The ``ffcore`` command line: train presets, evaluate checkpoints, compare FF with backprop,
fetch datasets. Errors in arguments or data print one line and exit with status 2."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table

from ffcore.data.fetch import FetchError, fetch
from ffcore.data.idx import IdxError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Forward-Forward experiments (Hinton, 2022).")
data_app = typer.Typer(no_args_is_help=True, help="Datasets.")
app.add_typer(data_app, name="data")
console = Console(stderr=True)
USER_ERRORS = (ValueError, FileNotFoundError, IdxError, FetchError, NotADirectoryError)


def user_errors(fn):
    """Turn a bad argument or bad data into one clear line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _goodness_text(stats: dict) -> str:
    pairs = []
    i = 0
    while f"g_pos_{i}" in stats:
        pairs.append(f"L{i} {stats[f'g_pos_{i}']:.0f}/{stats[f'g_neg_{i}']:.0f}")
        i += 1
    return ("G+/G- " + " ".join(pairs)) if pairs else ""


@app.command("presets")
def presets_cmd():
    """List the presets."""
    from ffcore.presets import PRESETS

    table = Table("model", "data", "widths", "epochs", "paper", "description")
    table.columns.insert(0, Column("preset", no_wrap=True))
    for p in PRESETS.values():
        widths = "x".join(str(w) for w in p.model.widths)
        table.add_row(p.name, p.kind, p.dataset, widths, str(p.epochs), p.paper_result, p.description)
    Console().print(table)


@app.command()
@user_errors
def train(
    preset: Optional[str] = typer.Option(None, help="preset name (see `ffcore presets`)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with the IDX files (not needed for synthetic)"),
    epochs: Optional[int] = typer.Option(None, min=1, help="override the preset's epochs"),
    batch_size: Optional[int] = typer.Option(None, min=1, help="override the preset's batch size"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/latest"), help="run folder: metrics.jsonl, report.json, PNG, checkpoint"),
    eval_every: int = typer.Option(1, min=1, help="validate every N epochs"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    widths: Optional[str] = typer.Option(None, help="override the hidden layers' widths, e.g. 1000,500,100"),
    jitter: Optional[int] = typer.Option(None, min=0, help="shift training images by up to this many pixels "
                                         "each way, a random shift per image per batch (paper 3.3)"),
    minutes: Optional[float] = typer.Option(None, min=0.01, help="time budget: fewer epochs than asked when "
                                            "they would not fit, decided while the learning rate is at its peak"),
    resume: Optional[Path] = typer.Option(None, help="continue the stopped run in this run folder from its last "
                                          "epoch, exactly as it was asked for (its other options are the run's)"),
    layer: Optional[list[str]] = typer.Option(None, help="override a field of the preset's layer settings "
                                              "(ffcore.layers.LayerConfig), e.g. --layer weight_decay=4e-3 "
                                              "--layer decay_biases=false; repeatable"),
):
    """Train a preset; writes a run folder and prints the final report. The folder is brought up
    to date after every epoch, so a stopped run continues with ``--resume RUN``."""
    from ffcore.data.datasets import load_dataset
    from ffcore.experiment import run_preset
    from ffcore.presets import get_preset

    if (preset is None) == (resume is None):
        raise ValueError("give --preset to start a run, or --resume RUN to continue one (not both)")
    if resume is not None:
        run = _resumed_run(resume)
        overrides = run["overrides"]
        preset, seed, eval_every, minutes = run["preset"], run["seed"], run["eval_every"], run["minutes"]
        data_dir, device, out = (Path(run["data_dir"]) if run["data_dir"] else None), run["device"], resume
    else:
        overrides = {"epochs": epochs, "batch_size": batch_size, "widths": parse_widths(widths), "jitter": jitter,
                     "layer": parse_layer_overrides(layer)}
        run = {"command": sys.argv, "overrides": overrides, "data_dir": str(data_dir) if data_dir else None,
               "device": device, "minutes": minutes, "versions": _versions(), "hardware": _hardware(), "resumed": []}
    p = get_preset(preset).with_overrides(**overrides)
    data = load_dataset(p.dataset, data_dir, seed=seed)
    n_batches = -(-len(data.train_x) // p.batch_size)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, disable=quiet,
    ) as progress:
        task = progress.add_task(p.name, total=p.epochs * n_batches, info="")
        planned = [p.epochs]  # fewer under a time budget

        def on_batch(epoch: int, b: int, stats: dict) -> None:
            if b % 10 == 0:
                info = f"ep {epoch + 1}/{planned[0]} loss {stats['loss']:.3f} {_goodness_text(stats)}"
                progress.update(task, completed=epoch * n_batches + b + 1, info=info)

        def on_epoch(record) -> None:
            if record.epochs_planned != planned[0]:  # a time budget cut the run short
                planned[0] = record.epochs_planned
                progress.update(task, total=planned[0] * n_batches)
            val = " ".join(f"{m} {100 * e:.2f}%" for m, e in record.val_error.items())
            progress.console.print(
                f"epoch {record.epoch}/{record.epochs_planned}: loss {record.train_loss:.4f} val error {val or '-'} "
                f"({record.samples_per_second:.0f} samples/s)", highlight=False)

        report = run_preset(p, data_dir=data_dir, out=out, device=device, seed=seed, eval_every=eval_every,
                            data=data, on_batch=on_batch, on_epoch=on_epoch,
                            time_budget_s=None if minutes is None else 60 * minutes, resume=resume is not None,
                            run=run)
    _print_report(report, out)


def _versions() -> dict:
    import platform

    import torch

    from ffcore import __version__

    return {"ffcore": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _hardware() -> dict:
    from ffcore.experiment import hardware

    return hardware()


def _resumed_run(folder: Path) -> dict:
    """The run in ``folder`` as it was asked for, with this resumption recorded."""
    import datetime

    from ffcore.resume import read_run

    run = read_run(folder)
    run["resumed"] = [*run.get("resumed", []), {"command": sys.argv, "versions": _versions(), "hardware": _hardware(),
                      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}]
    return run


def _print_report(report: dict, out: Path) -> None:
    table = Table("metric", "value", title=f"{report['preset']} ({report['device']})")
    for method, r in report["test"].items():
        table.add_row(f"test error ({method})", f"{100 * r['error']:.2f}%")
        table.add_row(f"test macro F1 ({method})", f"{r['macro_f1']:.4f}")
    if report["epochs"] != report.get("epochs_requested", report["epochs"]):
        table.add_row("epochs", f"{report['epochs']} of {report['epochs_requested']} (time budget)")
    table.add_row("wall time", f"{report['wall_seconds']:.1f} s")
    table.add_row("training samples/s", f"{report['train_samples_per_second']:.0f}")
    table.add_row("peak RSS", f"{report['peak_rss_mb']:.0f} MiB")
    table.add_row("parameters", f"{report['parameters']:,}")
    Console().print(table)
    console.print(f"run folder: {out} (report.json, metrics.jsonl, learning_curve.png, checkpoint/)")


@app.command("eval")
@user_errors
def eval_cmd(
    checkpoint: Path = typer.Argument(..., help="a checkpoint folder (model.safetensors + config.json)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with the IDX files"),
    dataset: Optional[str] = typer.Option(None, help="mnist | fashion-mnist | cifar10 | synthetic (default: the preset's)"),
    split: str = typer.Option("test", help="test | val"),
    device: str = typer.Option("auto"),
    per_layer: bool = typer.Option(False, help="also the goodness classifier's error on each hidden layer alone "
                                   "(supervised FF MLPs)"),
):
    """Evaluate a checkpoint: error and macro F1 for each prediction method."""
    from ffcore.checkpoint import load_checkpoint, read_checkpoint_meta
    from ffcore.data.datasets import load_dataset
    from ffcore.device import resolve_device
    from ffcore.presets import PRESETS
    from ffcore.train import evaluate, evaluate_layers

    if split not in ("test", "val"):
        raise ValueError(f"split must be test or val, got {split!r}")
    meta = read_checkpoint_meta(checkpoint)
    preset = PRESETS.get(meta.get("extra", {}).get("preset", ""))
    name = dataset or (preset.dataset if preset else None)
    if name is None:
        raise ValueError("this checkpoint names no preset: pass --dataset")
    dev = resolve_device(device)
    model = load_checkpoint(checkpoint, dev)
    data = load_dataset(name, data_dir).to(dev)
    x, y = (data.test_x, data.test_y) if split == "test" else (data.val_x, data.val_y)
    results = evaluate(model, x, y, data.num_classes)
    table = Table("method", "error", "macro F1", title=f"{checkpoint} on {name} {split}")
    for method, r in results.items():
        table.add_row(method, f"{100 * r['error']:.2f}%", f"{r['macro_f1']:.4f}")
    if per_layer:
        results["goodness_per_layer"] = evaluate_layers(model, x, y)
        for which, error in results["goodness_per_layer"].items():
            table.add_row(f"goodness, {which}", f"{100 * error:.2f}%", "")
    Console().print(table)
    print(json.dumps(results))


@app.command()
@user_errors
def compare(
    presets: list[str] = typer.Argument(..., help="presets to run side by side, e.g. mnist-ff-cpu mnist-bp-cpu"),
    data_dir: Optional[Path] = typer.Option(None),
    epochs: Optional[int] = typer.Option(None, min=1, help="same epochs for every preset"),
    device: str = typer.Option("auto"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/compare")),
    eval_every: int = typer.Option(5, min=1, help="validate every N epochs"),
    widths: Optional[list[str]] = typer.Option(None, help="run every preset with these hidden widths instead "
                                               "(repeat for several architectures: --widths 500,500 --widths 1000,500)"),
):
    """Train several presets, each in its own process (so peak memory is its own), and tabulate
    test error, macro F1, wall time, samples/s and peak memory side by side."""
    from ffcore.presets import get_preset

    architectures = [parse_widths(w) for w in widths] if widths else [None]
    for name in presets:
        for arch in architectures:
            get_preset(name).with_overrides(widths=arch)  # fail fast on a typo, before hours of training
    reports = []
    for arch in architectures:
        for name in presets:
            run_dir = out / (name if arch is None else f"{name}-{'x'.join(map(str, arch))}")
            cmd = [sys.executable, "-m", "ffcore.cli", "train", "--preset", name, "--device", device,
                   "--seed", str(seed), "--out", str(run_dir), "--quiet", "--eval-every", str(eval_every)]
            cmd += ["--data-dir", str(data_dir)] if data_dir else []
            cmd += ["--epochs", str(epochs)] if epochs else []
            cmd += ["--widths", ",".join(map(str, arch))] if arch else []
            console.print(f"training {run_dir.name} ...")
            result = subprocess.run(cmd, stdout=subprocess.DEVNULL)
            if result.returncode != 0:
                raise ValueError(f"training {run_dir.name} failed (exit {result.returncode})")
            reports.append(json.loads((run_dir / "report.json").read_text()))
    table = Table("preset", "model", "widths", "epochs", "test error", "macro F1", "wall s", "samples/s",
                  "peak RSS MiB", "params", title="side by side, one run")
    for r in reports:
        method, res = next(iter(r["test"].items()))
        table.add_row(r["preset"], r["kind"], _widths_text(r), str(r["epochs"]), f"{100 * res['error']:.2f}% ({method})",
                      f"{res['macro_f1']:.4f}", f"{r['wall_seconds']:.0f}", f"{r['train_samples_per_second']:.0f}",
                      f"{r['peak_rss_mb']:.0f}", f"{r['parameters']:,}")
    Console(width=max(160, Console().width)).print(table)
    (out / "compare.json").write_text(json.dumps(reports, indent=2))
    (out / "compare.md").write_text(compare_markdown(reports))
    console.print(f"wrote {out / 'compare.json'} and {out / 'compare.md'}")


def compare_markdown(reports: list[dict]) -> str:
    """The side-by-side table as Markdown, every prediction method of every model."""
    lines = ["| preset | model | widths | epochs | method | test error | macro F1 | wall s | train samples/s | "
             "peak RSS MiB | parameters |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in reports:
        for method, res in r["test"].items():
            lines.append(f"| {r['preset']} | {r['kind']} | {_widths_text(r)} | {r['epochs']} | {method} | "
                         f"{100 * res['error']:.2f}% | "
                         f"{res['macro_f1']:.4f} | {r['wall_seconds']:.0f} | {r['train_samples_per_second']:.0f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['parameters']:,} |")
    return "\n".join(lines) + "\n"


def _widths_text(report: dict) -> str:
    return "-".join(map(str, report["widths"])) if "widths" in report else "?"


def parse_widths(text: str | None) -> tuple[int, ...] | None:
    """``"1000,500,100"`` -> (1000, 500, 100); a clear error for anything else."""
    if text is None:
        return None
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise ValueError(f"widths must be whole numbers separated by commas, e.g. 1000,500,100; got {text!r}") from None
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be positive, got {text!r}")
    return widths


def parse_layer_overrides(items: list[str] | None) -> dict | None:
    """``["weight_decay=4e-3", "decay_biases=false"]`` -> ``{"weight_decay": 0.004, "decay_biases":
    False}``, each value read as its ``LayerConfig`` field's type; a clear error for anything else
    (the values themselves are checked by ``LayerConfig``)."""
    from dataclasses import fields

    from ffcore.layers import LayerConfig

    if not items:
        return None
    types = {f.name: str(f.type) for f in fields(LayerConfig)}
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or name not in types:
            raise ValueError(f"--layer takes NAME=VALUE with NAME one of {', '.join(types)}; got {item!r}")
        kind = types[name]
        try:
            if kind == "bool":
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                out[name] = text.lower() in ("true", "1")
            else:
                out[name] = {"float": float, "int": int}.get(kind, str)(text)
        except ValueError:
            raise ValueError(f"--layer {name} takes a {kind}, got {text!r}") from None
    return out


@data_app.command("fetch")
@user_errors
def data_fetch(
    dataset: str = typer.Argument(..., help="mnist | fashion-mnist | cifar10"),
    dest: Path = typer.Option(..., help="folder to put the four IDX files in"),
    base_url: Optional[str] = typer.Option(None, help="a mirror to download from instead"),
):
    """Download a dataset, verifying every file's checksum."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
        tasks: dict[str, int] = {}

        def on_progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        paths = fetch(dataset, dest, base_url=base_url, on_progress=on_progress)
    for path in paths:
        console.print(f"ok {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
