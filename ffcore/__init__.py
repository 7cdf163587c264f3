"""ffcore: the Forward-Forward algorithm (Hinton, 2022) in PyTorch."""

from ffcore.backprop import BackpropMLP
from ffcore.goodness import ff_loss, goodness, layer_norm, p_positive, symmetric_loss
from ffcore.layers import FFLayer, FFLinear, LayerConfig, threshold_schedule
from ffcore.mlp import FFMLP, MLPConfig

__all__ = [
    "BackpropMLP", "FFLayer", "FFLinear", "FFMLP", "LayerConfig", "MLPConfig",
    "ff_loss", "goodness", "layer_norm", "p_positive", "symmetric_loss", "threshold_schedule",
]
__version__ = "0.1.0"
