"""Local receptive fields: a masked dense layer (footnote 13) against an explicit locally
connected computation (each location's inputs gathered, one batched matrix product over
locations), for the layers of a receptive-field layout: the pre-activations of a batch and the
closed-form weight gradient, as one FF step does them. Same results (checked), time per batch on
this machine. ``footnote8``: the three layers of the MNIST net of paper 3.2 (where
``ffcore.local.FFMasked`` computes locally connected); ``topographic11``: the first and last
layers of the recurrent CIFAR-10 net of paper section 4 (inputs below and above; truncated
fields padded with a zero input), where the layout computes masked dense.

    python benchmarks/local_fields.py --out docs/local_fields.json
    python benchmarks/local_fields.py --layout topographic11 --batch 100 --repeats 5 --out docs/local_fields_cifar.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ffcore.experiment import write_results
from ffcore.local import footnote8_masks, recurrent_masks


def layers_of(layout: str) -> list[tuple[int, torch.Tensor, int]]:
    """(layer number, mask, locations) of the layers to measure."""
    if layout == "footnote8":
        return list(zip((1, 2, 3), footnote8_masks(), (16, 9, 4)))
    masks = recurrent_masks("topographic11", (32, 32), 3072, 3, 10)
    return [(1, masks[0], 1024), (3, masks[2], 1024)]


def explicit_layout(mask: torch.Tensor, locations: int) -> torch.Tensor:
    """(locations, inputs per location): which inputs each location's units read; locations with
    fewer (truncated at an edge) are padded with input D, a zero appended to every row."""
    per_location = mask.reshape(locations, -1, mask.shape[1])[:, 0]  # every channel of a location reads the same
    reads = [row.nonzero().squeeze(1) for row in per_location]
    k = max(len(r) for r in reads)
    return torch.stack([F.pad(r, (0, k - len(r)), value=mask.shape[1]) for r in reads])


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", choices=("footnote8", "topographic11"), default="footnote8")
    ap.add_argument("--batch", type=int, default=200, help="rows per step (positive and negative data together)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/local_fields.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for number, mask, locations in layers_of(args.layout):
        n_out, n_in = mask.shape
        weight = torch.randn(n_out, n_in) * mask
        x = torch.rand(args.batch, n_in)
        dz = torch.randn(args.batch, n_out)
        index = explicit_layout(mask, locations)  # (L, K)
        channels = n_out // locations
        padded_w = F.pad(weight, (0, 1))  # input D (the padding) has weight 0
        local_w = padded_w.view(locations, channels, -1).gather(2, index[:, None, :].expand(-1, channels, -1))

        def local():
            patches = F.pad(x, (0, 1))[:, index].transpose(0, 1)  # (L, B, K)
            z = torch.bmm(patches, local_w.transpose(1, 2))  # (L, B, C)
            grad = torch.bmm(dz.reshape(args.batch, locations, channels).transpose(0, 1).transpose(1, 2), patches)
            return z.transpose(0, 1).reshape(args.batch, n_out), grad  # grad: (L, C, K)

        def dense():
            z = x @ weight.T
            grad = (dz.T @ x) * mask
            return z, grad

        z_dense, g_dense = dense()
        z_local, g_local = local()
        assert torch.allclose(z_dense, z_local, atol=1e-3), "the two computations disagree"
        g_padded = F.pad(g_dense, (0, 1))
        for k in range(locations):
            assert torch.allclose(g_padded[k * channels:(k + 1) * channels, index[k]], g_local[k], atol=1e-3)
        row = {"layer": number, "units": n_out, "inputs": n_in, "locations": locations,
               "inputs_per_location": int(index.shape[1]), "weights_inside": int(mask.sum()),
               "dense_mult_adds": 2 * n_out * n_in, "local_mult_adds": 2 * n_out * int(index.shape[1]),
               "masked_dense_ms": 1e3 * timed(dense, args.repeats), "locally_connected_ms": 1e3 * timed(local, args.repeats)}
        rows.append(row)
        print(f"layer {row['layer']}: masked dense {row['masked_dense_ms']:.2f} ms, locally connected "
              f"{row['locally_connected_ms']:.2f} ms per {args.batch}-row step "
              f"({row['dense_mult_adds'] / row['local_mult_adds']:.1f}x the multiply-adds dense)", flush=True)
    write_results(args.out, args, layers=rows)


if __name__ == "__main__":
    main()
