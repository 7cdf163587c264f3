"""Named experiments, one registry shared by the CLI, the benchmarks and the docs.

Names follow the paper: ``mnist-ff-4x2000`` is the supervised net of section 3.3,
``mnist-ff-unsup-4x2000`` the hybrid-image net of section 3.2, ``mnist-bp-4x2000`` the backprop
baseline of identical architecture. The ``*-cpu`` presets are sized for a 2-core CPU; the
``synthetic-*`` presets need no data files and finish in seconds (tests, demos).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ffcore.layers import LayerConfig
from ffcore.mlp import MLPConfig
from ffcore.recurrent import RecurrentConfig


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    dataset: str  # "mnist" | "fashion-mnist" | "cifar10" | "synthetic"
    kind: str  # "ff" | "bp" | "recurrent"
    model: MLPConfig | RecurrentConfig
    epochs: int
    batch_size: int = 100
    paper_result: str = ""
    jitter: int = 0  # training images shifted by up to this many pixels each way (paper 3.3)

    def with_overrides(self, widths: tuple[int, ...] | None = None, layer: dict | None = None,
                       **changes) -> "Preset":
        """The preset with ``epochs``, ``batch_size``, ``jitter``, the hidden layers' ``widths`` or
        fields of their ``LayerConfig`` (``layer``, e.g. ``{"weight_decay": 4e-3}``) changed
        (None: kept)."""
        model = self.model
        if widths is not None:
            model = replace(model, widths=tuple(widths))
        if layer:
            model = replace(model, layer=replace(model.layer, **layer))
        if model is not self.model:
            changes["model"] = model
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# The recipe of the paper's MATLAB code as reimplemented by the community: mini-batches of 100,
# SGD with momentum, small weight decay; threshold = number of units. The recurrent, local and
# CIFAR-10 presets were measured without peer normalization (until 2026-12-01 its strength of 0.03
# was on a scale that made it a no-op: FFLayer.peer_dz) and keep it off until measured with it.
FF_LAYER = LayerConfig(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=3e-4)
# Footnote 9's peer normalization, as the paper's code applies it (an additional derivative per
# positive example). Without it a third of mnist-ff-cpu's second layer is dead and a few units
# carry the rest; 0.02 revives them, the top layer classifies alone as well as the others, and
# the net learns faster (12 epochs: 1.96% -> 1.81% validation error; 0.06 gave 1.99%), though it
# ends where it did within the noise (30 epochs of mnist-ff-cpu, 60 of mnist-ff-4x2000:
# docs/RESULTS.md, eleventh session).
FF_PEER = 0.02
# Weight decay. Once the FF loss is fitted (mnist-ff-4x2000: 0.23 at epoch 60) what is left is
# generalization, and from 2e-3 on the supervised nets gain from every doubling of the decay up
# to 8e-3 (validation and test, both nets, docs/RESULTS.md, thirteenth session): mnist-ff-4x2000,
# 60 epochs, test error (goodness) 1.84 / 1.73 / 1.50 / 1.37% at 3e-4 / 2e-3 / 4e-3 / 8e-3; mnist-ff-cpu, 30 epochs,
# 1.90 / 1.84 / 1.58 / 1.52 / 1.42% at 3e-4 / 2e-3 / 4e-3 / 8e-3 / 1.6e-2. 8e-3 is the strongest
# measured on both. (2e-3 is the strength of the paper's code relative to the gradient: its weight
# cost 0.001 against a derivative y (1 - p), ours against 2 y (1 - p).) The unsupervised nets keep
# 2e-3: 8e-3 moved mnist-ff-unsup-cpu both ways (validation 1.64 -> 1.78%, test 1.61 -> 1.55%).
FF_MLP_WEIGHT_DECAY = 8e-3
FF_MLP_UNSUP_WEIGHT_DECAY = 2e-3
# What the supervised fully connected FF presets, full-size or synthetic, regularize with (the
# unsupervised ones take the same with FF_MLP_UNSUP_WEIGHT_DECAY).
FF_MLP_REGULARIZERS = dict(peer_normalization=FF_PEER, weight_decay=FF_MLP_WEIGHT_DECAY)
# The fully connected FF nets take steps scaled by each layer's fan-in (LayerConfig.lr_scale): lr
# 1e-3 is the rate of a layer reading 1000 inputs, the width this recipe was tuned at.
FF_MLP_LAYER = replace(FF_LAYER, lr_scale="fan_in", **FF_MLP_REGULARIZERS)
FF_MLP_UNSUP_LAYER = replace(FF_MLP_LAYER, weight_decay=FF_MLP_UNSUP_WEIGHT_DECAY)
BP_LAYER = LayerConfig(optimizer="adam", lr=1e-3, weight_decay=0.0)
SYNTH = dict(input_dim=196, image_shape=(14, 14), widths=(128, 128, 128))
# Paper section 4, table 1: CIFAR-10 through 32 x 32 maps of 3 units per location with 11 x 11
# receptive fields (ffcore.local, "topographic11"); FF is the recurrent net of section 3.4 (top-down
# fields too), run for 10 iterations with the label goodness accumulated over iterations 4 to 6.
# Natural images have a large mean: inputs are centered (ffcore.centering). Epochs are the MNIST
# presets' (the paper gives none for CIFAR-10); nothing here was tuned on CIFAR-10 (no copy of it
# on the machines this was built on).
CIFAR = dict(input_dim=3072, image_shape=(32, 32), receptive_fields="topographic11")


def cifar_ff(depth: int, goodness: str) -> RecurrentConfig:
    return RecurrentConfig(**CIFAR, widths=(3072,) * depth, iterations=10, eval_window=(4, 6), center_input=True,
                           layer=replace(FF_LAYER, goodness=goodness))


def cifar_bp(depth: int) -> MLPConfig:
    # "both methods using weight-decay to reduce overfitting"; the readout reads every hidden layer,
    # as the recurrent net's one-pass softmax does
    return MLPConfig(**CIFAR, widths=(3072,) * depth, readout_layers=tuple(range(depth)),
                     layer=replace(BP_LAYER, weight_decay=1e-4))


# Small nets tolerate (and need, to finish in seconds) a larger step than the 2000-unit ones.
SYNTH_FF_LAYER = replace(FF_LAYER, lr=3e-3)
SYNTH_FF_MLP_LAYER = replace(SYNTH_FF_LAYER, **FF_MLP_REGULARIZERS)
SYNTH_FF_MLP_UNSUP_LAYER = replace(SYNTH_FF_MLP_LAYER, weight_decay=FF_MLP_UNSUP_WEIGHT_DECAY)

_PRESETS = [
    Preset("mnist-ff-4x2000", "supervised FF, label in the first 10 pixels, hard negatives (paper 3.3)",
           "mnist", "ff", MLPConfig(layer=FF_MLP_LAYER), epochs=60, paper_result="1.36% test error"),
    Preset("mnist-ff-4x2000-jitter", "mnist-ff-4x2000 on jittered images: shifts of up to 2 pixels, 25 per image "
           "(paper 3.3)", "mnist", "ff", MLPConfig(layer=FF_MLP_LAYER), epochs=500, jitter=2,
           paper_result="0.64% test error"),
    Preset("mnist-ff-cpu-jitter", "mnist-ff-cpu on jittered images (shifts of up to 2 pixels), sized for a CPU",
           "mnist", "ff", MLPConfig(widths=(1000, 1000, 1000), layer=FF_MLP_LAYER), epochs=30, jitter=2),
    Preset("mnist-ff-unsup-4x2000", "unsupervised FF, hybrid-image negatives, softmax on last 3 layers (paper 3.2)",
           "mnist", "ff", MLPConfig(mode="unsupervised", negatives="hybrid", layer=FF_MLP_UNSUP_LAYER), epochs=100,
           paper_result="1.37% test error"),
    Preset("mnist-bp-4x2000", "backprop baseline, the architecture of mnist-ff-4x2000",
           "mnist", "bp", MLPConfig(layer=BP_LAYER), epochs=20, paper_result="about 1.4% after about 20 epochs"),
    Preset("mnist-ff-cpu", "supervised FF 3x1000, hard negatives: finishes in about 15 min on 2 CPU cores",
           "mnist", "ff", MLPConfig(widths=(1000, 1000, 1000), layer=FF_MLP_LAYER), epochs=30),
    Preset("mnist-ff-cpu-bf16", "mnist-ff-cpu with bfloat16 matrix products (AVX-512 BF16 CPUs, GPUs)",
           "mnist", "ff", MLPConfig(widths=(1000, 1000, 1000), layer=replace(FF_MLP_LAYER, matmul_dtype="bfloat16")),
           epochs=30),
    Preset("mnist-bp-cpu", "backprop baseline, the architecture of mnist-ff-cpu",
           "mnist", "bp", MLPConfig(widths=(1000, 1000, 1000), layer=BP_LAYER), epochs=30),
    Preset("mnist-ff-unsup-cpu", "unsupervised FF 3x1000 with hybrid negatives, sized for a CPU",
           "mnist", "ff", MLPConfig(widths=(1000, 1000, 1000), mode="unsupervised", negatives="hybrid",
                                    layer=FF_MLP_UNSUP_LAYER), epochs=30),
    Preset("mnist-ff-local-unsup", "unsupervised FF with local receptive fields, no weight sharing (paper 3.2, "
           "footnote 8: 4x4/3x3/2x2 grids of 128/220/512 channels; measured without its peer normalization)",
           "mnist", "ff", MLPConfig(widths=(2048, 1980, 2048), mode="unsupervised", negatives="hybrid",
                                    receptive_fields="footnote8", layer=FF_LAYER, center_input=False), epochs=60,
           paper_result="1.16% test error"),
    Preset("mnist-bp-local", "backprop baseline with the connectivity of mnist-ff-local-unsup",
           "mnist", "bp", MLPConfig(widths=(2048, 1980, 2048), mode="unsupervised", negatives="hybrid",
                                    receptive_fields="footnote8", layer=BP_LAYER, center_input=False), epochs=60),
    Preset("mnist-ff-recurrent", "recurrent top-down FF, 8 damped synchronous iterations, hard negatives (paper 3.4)",
           "mnist", "recurrent", RecurrentConfig(widths=(2000, 2000, 2000), layer=FF_LAYER), epochs=60,
           paper_result="1.31% test error"),
    Preset("mnist-ff-recurrent-cpu", "recurrent top-down FF 2x500, 8 iterations, sized for a CPU",
           "mnist", "recurrent", RecurrentConfig(widths=(500, 500), layer=FF_LAYER), epochs=10),
    *[Preset(f"cifar10-ff-{depth}x3072-{sign}", f"recurrent FF, {depth} hidden 32x32x3 maps with 11x11 local fields, "
             f"{sign} sum of squares goodness (paper section 4, table 1)", "cifar10", "recurrent",
             cifar_ff(depth, f"{sign}_ssq"), epochs=60, paper_result=f"{result}% test error (goodness for every "
             f"label; one-pass softmax {softmax}%)")
      for depth, sign, result, softmax in ((2, "min", 41, 45), (2, "max", 44, 46), (3, "min", 41, 44),
                                           (3, "max", 44, 46))],
    *[Preset(f"cifar10-bp-{depth}x3072", f"backprop with the bottom-up connectivity of cifar10-ff-{depth}x3072-*",
             "cifar10", "bp", cifar_bp(depth), epochs=20, paper_result=f"{result}% test error")
      for depth, result in ((2, 37), (3, 39))],
    Preset("synthetic-ff-recurrent", "recurrent top-down FF on the built-in synthetic set (seconds)",
           "synthetic", "recurrent", RecurrentConfig(input_dim=196, widths=(128, 128), iterations=4,
                                                     eval_window=(3, 4), layer=SYNTH_FF_LAYER), epochs=2),
    Preset("synthetic-ff", "supervised FF on the built-in synthetic set (seconds)",
           "synthetic", "ff", MLPConfig(**SYNTH, layer=SYNTH_FF_MLP_LAYER), epochs=4),
    Preset("synthetic-ff-unsup", "unsupervised FF on the built-in synthetic set (seconds)",
           "synthetic", "ff", MLPConfig(**SYNTH, mode="unsupervised", negatives="hybrid", layer=SYNTH_FF_MLP_UNSUP_LAYER),
           epochs=4),
    Preset("synthetic-bp", "backprop baseline on the built-in synthetic set (seconds)",
           "synthetic", "bp", MLPConfig(**SYNTH, layer=BP_LAYER), epochs=4),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]
