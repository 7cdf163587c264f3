"""Paper figure 5 (section 4.1): can FF's negative passes be done offline? The next-character
model on 248 strings of 100 characters from Aesop's fables, three learning regimes in one run on
the same strings, from the same initial weights:

  (a) fixed     random hidden weights; only the softmax learns;
  (b) combined  each update: positive gradients of the data windows + negative gradients of
                windows the current model generated from each string's first 10 characters;
  (c) offline   the positive update first; then the *updated* model generates the negatives and
                a second update applies them (what the service's wake and sleep workers do).

Each update uses all 22,320 character predictions. Reports the training perplexity before every
update (the paper's learning curves) and the perplexity on the next 248 strings of the book
(held out) every ``--eval-every`` updates, as JSON and one PNG.

    python benchmarks/next_character.py --data-dir ../shared/data/aesop --hidden 500 --updates 150 \
        --out docs/next_character
    # the paper's size (three layers of 2000 ReLUs; about 10x the time per update):
    python benchmarks/next_character.py --data-dir ../shared/data/aesop --hidden 2000 --updates 150 \
        --out docs/next_character_2000
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from rich.progress import Progress

from ffcore.data.text import load_aesop
from ffcore.experiment import hardware
from ffcore.sequence import READOUT_INPUTS, REGIMES, NextCharConfig, NextCharFF, perplexity, update, windows_of


def run_regime(regime: str, config: NextCharConfig, train, held, updates: int, eval_every: int, seed: int,
               progress: Progress) -> dict:
    model = NextCharFF(config)  # same seed: the same initial weights for every regime
    generator = torch.Generator().manual_seed(seed)
    held_contexts, held_targets, _ = windows_of(held, config.context)
    curve, held_curve, goodness = [], [], []
    task = progress.add_task(f"{regime:9s}", total=updates)
    started = time.perf_counter()
    for k in range(updates):
        if k % eval_every == 0:
            held_curve.append((k, perplexity(model.cross_entropy(held_contexts, held_targets))))
        out = update(model, train, regime, generator)
        curve.append(perplexity(out["train_nats"]))
        if "goodness_positive" in out:
            goodness.append({"positive": out["goodness_positive"], "negative": out["goodness_negative"]})
        progress.update(task, advance=1, description=f"{regime:9s} perplexity {curve[-1]:6.2f}")
    contexts, targets, _ = windows_of(train, config.context)
    final_train = perplexity(model.cross_entropy(contexts, targets))
    final_held = perplexity(model.cross_entropy(held_contexts, held_targets))
    held_curve.append((updates, final_held))
    return {"train_perplexity": curve, "final_train_perplexity": final_train, "held_out": held_curve,
            "final_held_out_perplexity": final_held, "goodness_over_threshold": goodness[-1:] or None,
            "seconds": time.perf_counter() - started}


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_held) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = {"fixed": "(a) fixed random hidden weights", "combined": "(b) positive + negative in each update",
              "offline": "(c) positive, then negatives from the new model"}
    for regime, r in results.items():
        ax_train.plot(range(1, len(r["train_perplexity"]) + 1), r["train_perplexity"],
                      label=f"{labels[regime]}: {r['final_train_perplexity']:.2f}")
        xs, ys = zip(*r["held_out"])
        ax_held.plot(xs, ys, marker=".", label=f"{labels[regime]}: {r['final_held_out_perplexity']:.2f}")
    ax_train.set(xlabel="update (22,320 predictions each)", ylabel="perplexity", title="training strings (figure 5)",
                 yscale="log")
    ax_held.set(xlabel="update", ylabel="perplexity", title="the next 248 strings (held out)", yscale="log")
    for ax in (ax_train, ax_held):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding aesop.txt")
    parser.add_argument("--hidden", type=int, default=500, help="units per hidden layer (paper: 2000)")
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--lr", type=float, default=NextCharConfig.lr, help="FF layers' normalized step")
    parser.add_argument("--readout-lr", type=float, default=NextCharConfig.readout_lr)
    parser.add_argument("--peer-normalization", type=float, default=0.0,
                        help="strength of the paper's footnote-9 peer normalization in the positive phase (0: off)")
    parser.add_argument("--readout-input", choices=READOUT_INPUTS, default=NextCharConfig.readout_input,
                        help="what the softmax reads of each hidden layer: its normalized activities or the "
                        "activities themselves (section 4.1's wording)")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/next_character"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, held = load_aesop(args.data_dir)
    config = NextCharConfig(hidden=args.hidden, lr=args.lr, readout_lr=args.readout_lr,
                            peer_normalization=args.peer_normalization,
                            readout_input=args.readout_input, seed=args.seed)
    regimes = [r.strip() for r in args.regimes.split(",")]
    results = {}
    with Progress() as progress:
        for regime in regimes:
            results[regime] = run_regime(regime, config, train, held, args.updates, args.eval_every, args.seed,
                                         progress)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {regime: {"final_train_perplexity": round(r["final_train_perplexity"], 3),
                        "final_held_out_perplexity": round(r["final_held_out_perplexity"], 3),
                        "seconds": round(r["seconds"], 1)} for regime, r in results.items()}
    report = {"date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
              "command": "python benchmarks/next_character.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
              "config": asdict(config), "strings": list(train.shape), "held_out_strings": list(held.shape),
              "summary": summary, "results": results}
    (args.out / "next_character.json").write_text(json.dumps(report, indent=1))
    plot(results, args.out / "next_character.png",
         f"Next character, Aesop: 3 x {args.hidden} ReLU, {args.updates} full-batch updates, "
         f"the softmax reads each layer's {args.readout_input}")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
