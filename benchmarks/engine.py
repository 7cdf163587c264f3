"""The FF engine against backprop and against the machine: training samples/s of an FF net and of
its backprop twin (same architecture, same batch) and the matrix-multiply throughput of the same
device, measured in one run, so FF's speed reads as a share of what the hardware can do.

    python benchmarks/engine.py --presets mnist-ff-cpu mnist-bp-cpu --device cpu --out docs/engine_cpu.json
    python benchmarks/engine.py --presets mnist-ff-4x2000 mnist-bp-4x2000 --device cuda --out $OUT/engine.json

Inputs are random images in [0, 1] with random labels: a step's cost does not depend on what the
pixels are. FLOPs are counted from the layer sizes: per sample and weight, a supervised FF step
makes 5 multiply-adds (the neutral-label pass, the positive and negative passes, their two weight
gradients) except in its first layer, whose three passes share one product with the image and
whose two gradients are one (FFLinear.label_step): 2; an unsupervised FF step makes 4; backprop
3 (forward, input gradient, weight gradient; no input gradient for the first layer).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ffcore.checkpoint import build_model
from ffcore.device import resolve_device
from ffcore.experiment import write_results
from ffcore.presets import get_preset


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls, after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops(n: int, device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matrix product: the best of n, 2n and 4n (a small product
    understates what the machine can do)."""
    best = 0.0
    for m in (n, 2 * n, 4 * n):
        a, b = torch.randn(m, m, device=device, dtype=dtype), torch.randn(m, m, device=device, dtype=dtype)
        best = max(best, 2 * m**3 / timed(lambda: a @ b, device, repeats))
    return best


def flops_per_sample(preset, shared: bool = True) -> float:
    """Matrix-product FLOPs of one training sample (see the module docstring)."""
    cfg = preset.model
    dims = (cfg.input_dim, *cfg.widths)
    macs = [dims[i] * dims[i + 1] for i in range(len(cfg.widths))]
    if preset.kind == "bp":
        return 2 * (3 * sum(macs) - macs[0])
    if cfg.mode == "supervised":
        return 2 * ((2 if shared else 5) * macs[0] + 5 * sum(macs[1:]))
    return 2 * 4 * sum(macs)


def measure(name: str, device: torch.device, batches: int, shared: bool = True) -> dict:
    preset = get_preset(name)
    if preset.kind == "recurrent":
        raise SystemExit(f"{name}: this benchmark times the feed-forward nets (ff, bp)")
    torch.manual_seed(0)
    model = build_model(preset.kind, preset.model).to(device)
    if not shared:  # the first layer's three passes one by one (the same update, more products)
        model.share_first_product = False
    b, cfg = preset.batch_size, preset.model
    x = torch.rand(b, cfg.input_dim, device=device)
    y = torch.randint(0, cfg.num_classes, (b,), device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    seconds = timed(lambda: model.train_batch(x, y, generator), device, batches)
    flops = flops_per_sample(preset, shared)
    return {"preset": name if shared else f"{name} (three passes)", "kind": preset.kind, "widths": list(cfg.widths), "batch_size": b,
            "matmul_dtype": cfg.layer.matmul_dtype, "samples_per_second": b / seconds,
            "flops_per_sample": flops, "achieved_gflops": flops * b / seconds / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["mnist-ff-cpu", "mnist-ff-cpu-bf16", "mnist-bp-cpu"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=int, default=30, help="timed steps per preset (median)")
    parser.add_argument("--matmul-size", type=int, default=1000,
                        help="the peak is the best n x n x n product for n = this, 2x and 4x this")
    parser.add_argument("--three-passes", action="store_true",
                        help="also time each supervised FF preset with its first layer's passes one by one")
    parser.add_argument("--out", default="docs/engine.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    peaks = {str(dt).removeprefix("torch."): matmul_flops(args.matmul_size, device, dt) / 1e9
             for dt in (torch.float32, torch.bfloat16)}
    print(f"{device}: best of {args.matmul_size}, 2x and 4x that, cubed, at " + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in peaks.items()))
    rows = [measure(name, device, args.batches) for name in args.presets]
    if args.three_passes:
        rows += [measure(name, device, args.batches, shared=False) for name in args.presets
                 if get_preset(name).kind == "ff" and get_preset(name).model.mode == "supervised"]
    bp = next((r["samples_per_second"] for r in rows if r["kind"] == "bp"), None)
    for r in rows:
        r["share_of_peak"] = r["achieved_gflops"] / peaks[r["matmul_dtype"]]
        r["vs_backprop"] = r["samples_per_second"] / bp if bp else None
        ratio = f"{r['vs_backprop']:.2f}x backprop" if bp else ""
        print(f"{r['preset']:>22}: {r['samples_per_second']:10,.0f} samples/s  {r['achieved_gflops']:9,.1f} GFLOP/s "
              f"({100 * r['share_of_peak']:.0f}% of the {r['matmul_dtype']} peak)  {ratio}")
    write_results(args.out, args, device=str(device), matmul_gflops=peaks, rows=rows)


if __name__ == "__main__":
    main()
