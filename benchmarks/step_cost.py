"""Per-frame cost of the streaming step: wall time of one damped synchronous ``step`` and of one
``positive_update`` (the step plus every layer's local positive update) for S streams at once.

    python benchmarks/step_cost.py --preset mnist-ff-recurrent --streams 1 16 256 --device auto
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ffcore.checkpoint import build_model
from ffcore.device import resolve_device
from ffcore.experiment import hardware
from ffcore.presets import get_preset


def _time(fn, repeats: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


def measure(preset_name: str, streams: list[int], repeats: int, device: torch.device) -> list[dict]:
    preset = get_preset(preset_name)
    if preset.kind != "recurrent":
        raise SystemExit(f"{preset_name} is not a recurrent preset")
    torch.manual_seed(0)
    model = build_model("recurrent", preset.model).to(device)
    rows = []
    for s in streams:
        frames = torch.rand(s, preset.model.input_dim, device=device)
        labels = torch.randint(0, preset.model.num_classes, (s,), device=device)
        state = model.initial_state(frames)

        def do_step():
            nonlocal state
            state, _ = model.step(frames, labels, state)

        def do_positive():
            nonlocal state
            state, _ = model.positive_update(frames, labels, state)

        for fn in (do_step, do_positive):  # warm-up
            _time(fn, 3, device)
        step_t = _time(do_step, repeats, device)
        pos_t = _time(do_positive, repeats, device)
        row = {"streams": s, "step_ms": 1e3 * statistics.median(step_t),
               "step_plus_positive_update_ms": 1e3 * statistics.median(pos_t)}
        row["frames_per_second"] = s / (row["step_plus_positive_update_ms"] / 1e3)
        rows.append(row)
        print(f"S={s:4d}: step {row['step_ms']:8.2f} ms   step+positive update {row['step_plus_positive_update_ms']:8.2f} ms"
              f"   {row['frames_per_second']:9.0f} frames/s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mnist-ff-recurrent")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 16, 256])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"{args.preset} on {device} ({hardware()})")
    rows = measure(args.preset, args.streams, args.repeats, device)
    if args.out:
        args.out.write_text(json.dumps({"preset": args.preset, "device": str(device), "hardware": hardware(),
                                        "median_of": args.repeats, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
