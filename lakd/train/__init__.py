"""The compact trainer (``lakd train``): plain CLIP training or distillation from a cached or online
teacher, with the recipes of :mod:`lakd.distill`, geometry tracked at every evaluation, torchrun DDP
and bit-exact resume.

- :mod:`~lakd.train.config`: :class:`TrainConfig` (YAML -> dataclasses, dotted overrides).
- :mod:`~lakd.train.data`: the resumable item order, caption choice, collation, cached teacher join.
- :mod:`~lakd.train.task`: student + heads + frozen teacher + recipe in one module (DDP wraps it).
- :mod:`~lakd.train.loop`: :func:`train`, one linear function.
- :mod:`~lakd.train.track`: evaluation and geometry on fixed sets.
- :mod:`~lakd.train.checkpoint`: the run folder, atomic checkpoints, resume.
"""

from lakd.train.config import TrainConfig, load_train_config
from lakd.train.loop import train

__all__ = ["TrainConfig", "load_train_config", "train"]
