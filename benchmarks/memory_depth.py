"""Peak training memory of FF vs backprop as depth grows.

FF trains each layer on detached inputs and frees its graph before the next layer runs, so the
activation memory of a training step should not grow with depth; backprop keeps every layer's
activations for the backward pass, so it grows linearly. Weights (and optimizer state) grow
linearly for both, so the table separates them from the training-step overhead.

Each (algorithm, depth) runs in a fresh process so peaks do not mix.

    python benchmarks/memory_depth.py --depths 4 16 64 --width 512 --batch 1024 --out docs/memory_depth.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(algo: str, depth: int, width: int, batch: int, steps: int, device: str) -> dict:
    import resource

    import torch

    from ffcore.checkpoint import build_model
    from ffcore.layers import LayerConfig
    from ffcore.mlp import MLPConfig

    torch.manual_seed(0)
    layer = LayerConfig(optimizer="sgd", lr=1e-3, momentum=0.9)
    # The readout reads the last layer only: a readout over every layer would make memory grow
    # with depth for reasons of architecture, not of the learning rule.
    config = MLPConfig(widths=(width,) * depth, layer=layer, readout_layers=(depth - 1,))
    dev = torch.device(device)
    model = build_model(algo, config).to(dev)
    x = torch.rand(batch, 784, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(dev) / 2**20
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        base = _rss_mb()
    for _ in range(steps):  # the peak of a step: weights, grads, momentum, activations
        model.train_batch(x, y)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    # Training keeps one gradient and one momentum buffer per weight alive between steps.
    state_mb = 2 * params * 4 / 2**20
    return {"algo": algo, "depth": depth, "width": width, "batch": batch, "device": device,
            "parameters": params, "model_mb": base, "peak_mb": peak, "grad_and_momentum_mb": state_mb,
            "activation_mb": peak - base - state_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", nargs=2, metavar=("ALGO", "DEPTH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.width, args.batch, args.steps, args.device)))
        return
    rows = []
    for depth in args.depths:
        for algo in ("ff", "bp"):
            cmd = [sys.executable, __file__, "--worker", algo, str(depth), "--width", str(args.width),
                   "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device]
            # Large blocks straight from mmap, returned to the OS when freed, so that peak RSS
            # counts live tensors rather than what the allocator keeps cached.
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{algo:2s} depth {depth:3d}: params {r['parameters']:>11,}  built {r['model_mb']:7.0f} MiB"
                  f"  peak {r['peak_mb']:7.0f} MiB  grads+momentum {r['grad_and_momentum_mb']:6.0f} MiB"
                  f"  activations {r['activation_mb']:6.0f} MiB", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
