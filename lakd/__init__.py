"""lakd: latent-alignment-aware knowledge distillation of CLIP."""

__version__ = "0.1.0"
