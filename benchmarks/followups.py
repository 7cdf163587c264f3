"""The follow-up papers' comparisons, each one command that writes a Markdown table, its JSON and,
where a picture says more, a PNG (issue 13, item 6):

  activations  FF and backprop with ReLU, GELU, leaky ReLU, tanh and sigmoid: test error and
               the mean absolute weight of each layer ("Extending the Forward Forward Algorithm"
               reports FF weights 10-20x larger than backprop's, and bounded activations failing)
  thresholds   FF with uniform thresholds (each layer's width) against pyramidal ones
               (increasing with depth, ``--pyramid``)
  goodness     FF with max and min sum of squares, max and min sum of activities

Every run: the same architecture (``--widths``), data, epochs and seed; FF with the CPU
presets' layer recipe (``mnist-ff-cpu``), backprop with ``mnist-bp-cpu``'s. Bewtra's FF vs
backprop table over architectures is ``ffcore compare`` with ``--widths`` (docs/RESULTS.md).

    python benchmarks/followups.py activations --data-dir ../shared/data/mnist --out docs/followups
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from ffcore.checkpoint import load_checkpoint
from ffcore.data.datasets import load_dataset
from ffcore.experiment import hardware, run_preset
from ffcore.mlp import MLPConfig
from ffcore.presets import BP_LAYER, FF_LAYER, Preset

ACTIVATIONS = ("relu", "gelu", "leaky_relu", "tanh", "sigmoid")
GOODNESS = ("max_ssq", "min_ssq", "max_sum", "min_sum")


def train(name: str, kind: str, config: MLPConfig, data, args) -> dict:
    """One run through the library's own training loop; the report plus weight magnitudes."""
    preset = Preset(name, name, args.dataset, kind, config, epochs=args.epochs)
    out = Path("runs") / "followups" / name  # run folders (checkpoints) stay out of docs/
    report = run_preset(preset, data_dir=args.data_dir, out=out, seed=args.seed, eval_every=args.epochs, data=data)
    model = load_checkpoint(out / "checkpoint")
    weights = [layer.linear.weight if kind == "ff" else layer.weight for layer in model.layers]
    report["mean_abs_weight"] = [float(w.detach().abs().mean()) for w in weights]
    errors = ", ".join(f"{m} {100 * r['error']:.2f}%" for m, r in report["test"].items())
    print(f"{name:28s} {errors}  mean |w| {[round(w, 4) for w in report['mean_abs_weight']]}  "
          f"({report['wall_seconds']:.0f} s)", flush=True)
    return report


def error_text(report: dict) -> str:
    return " / ".join(f"{100 * r['error']:.2f}%" for r in report["test"].values())


def f1_text(report: dict) -> str:
    """Macro F1 of the first prediction method (FF: the goodness classifier)."""
    return f"{next(iter(report['test'].values()))['macro_f1']:.4f}"


def activations(data, args, ff_cfg, bp_cfg) -> tuple[dict, list[str]]:
    rows, lines = {}, ["| activation | FF test error (goodness / softmax) | FF macro F1 | backprop test error | "
                       "backprop macro F1 | mean abs weight FF / backprop, per layer |",
                       "| --- | --- | --- | --- | --- | --- |"]
    for act in ACTIVATIONS:
        ff = train(f"ff-{act}", "ff", replace(ff_cfg, layer=replace(ff_cfg.layer, activation=act)), data, args)
        bp = train(f"bp-{act}", "bp", replace(bp_cfg, layer=replace(bp_cfg.layer, activation=act)), data, args)
        rows[act] = {"ff": ff, "bp": bp}
        ratio = " ".join(f"{f:.3f}/{b:.3f} ({f / b:.1f}x)" for f, b in zip(ff["mean_abs_weight"], bp["mean_abs_weight"]))
        lines.append(f"| {act} | {error_text(ff)} | {f1_text(ff)} | "
                     f"{error_text(bp)} | {f1_text(bp)} | {ratio} |")
    plot_weights(rows, args.out / "activations_weights.png")
    return rows, lines


def plot_weights(rows: dict, path: Path) -> None:
    from ffcore.plots import plt

    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(rows)
    layers = len(next(iter(rows.values()))["ff"]["mean_abs_weight"])
    width = 0.8 / (2 * layers)
    for j in range(layers):
        for k, (kind, hatch) in enumerate((("ff", ""), ("bp", "//"))):
            xs = [i + (2 * j + k) * width for i in range(len(names))]
            ax.bar(xs, [rows[n][kind]["mean_abs_weight"][j] for n in names], width, hatch=hatch,
                   color=f"C{j}", label=f"{'FF' if kind == 'ff' else 'backprop'} layer {j + 1}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    ax.set_yscale("log")
    ax.set(ylabel="mean |weight| after training", title="weight magnitudes, FF vs backprop")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def thresholds(data, args, ff_cfg, bp_cfg) -> tuple[dict, list[str]]:
    rows, lines = {}, ["| thresholds | per layer | FF test error (goodness / softmax) | FF macro F1 |", "| --- | --- | --- | --- |"]
    for name, pyramid in (("uniform", 0.0), (f"pyramidal {args.pyramid}", args.pyramid)):
        cfg = replace(ff_cfg, threshold_pyramid=pyramid)
        r = rows[name] = train(f"ff-thresholds-{pyramid}", "ff", cfg, data, args)
        lines.append(f"| {name} | {', '.join(f'{t:.0f}' for t in cfg.thresholds)} | {error_text(r)} | "
                     f"{f1_text(r)} |")
    return rows, lines


def goodness(data, args, ff_cfg, bp_cfg) -> tuple[dict, list[str]]:
    rows, lines = {}, ["| goodness | FF test error (goodness / softmax) | FF macro F1 |", "| --- | --- | --- |"]
    for kind in GOODNESS:
        r = rows[kind] = train(f"ff-{kind}", "ff", replace(ff_cfg, layer=replace(ff_cfg.layer, goodness=kind)), data, args)
        lines.append(f"| {kind} | {error_text(r)} | {f1_text(r)} |")
    return rows, lines


STUDIES = {"activations": activations, "thresholds": thresholds, "goodness": goodness}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=list(STUDIES))
    ap.add_argument("--data-dir", type=Path, help="IDX folder (MNIST); without it the synthetic data set")
    ap.add_argument("--widths", type=int, nargs="+", default=[500, 500, 500])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pyramid", type=float, default=0.5, help="thresholds study: theta_l = width_l (1 + pyramid l)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/followups"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.dataset = "mnist" if args.data_dir else "synthetic"
    data = load_dataset(args.dataset, args.data_dir, seed=args.seed)
    base = dict(input_dim=data.input_dim, num_classes=data.num_classes, widths=tuple(args.widths), image_shape=None)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, lines = STUDIES[args.study](data, args, MLPConfig(**base, layer=FF_LAYER), MLPConfig(**base, layer=BP_LAYER))
    table = "\n".join(lines) + "\n"
    (args.out / f"{args.study}.md").write_text(table)
    (args.out / f"{args.study}.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "hardware": hardware(), "args": {k: str(v) for k, v in vars(args).items()},
         "results": {k: _slim(v) for k, v in rows.items()}}, indent=2))
    print(table + f"wrote {args.out / (args.study + '.md')}")


def _slim(row: dict) -> dict:
    keep = ("test", "mean_abs_weight", "wall_seconds", "train_samples_per_second", "widths", "epochs")
    if "test" in row:
        return {k: row[k] for k in keep if k in row}
    return {kind: _slim(r) for kind, r in row.items()}


if __name__ == "__main__":
    main()
