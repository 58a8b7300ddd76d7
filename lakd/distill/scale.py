"""A CLIP-style learned logit scale, for losses that learn their own temperature (``icl``, ``afd``).

As in CLIP (Radford et al., ICML 2021) and open_clip, the parameter is the log-scale p and the
forward pass uses exp(p) as it is; the range 0 <= p <= log 100 is enforced on the parameter
itself by :meth:`LearnedLogitScale.clamp_` (under ``no_grad``), which a trainer calls after each
optimizer step (:meth:`lakd.distill.Recipe.clamp_logit_scales_` does it for every loss of a
recipe). Clamping the parameter rather than the forward value keeps its gradient alive: a
clamped forward has zero gradient above the cap, so the scale could stay stuck at 100.
"""

from __future__ import annotations

import math

import torch
from torch import nn

CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)
MIN_LOG_LOGIT_SCALE = 0.0
MAX_LOG_LOGIT_SCALE = math.log(100.0)


class LearnedLogitScale(nn.Module):
    """exp(p) with p a parameter initialised to ``init`` (default log(1/0.07)), clamped into
    [0, log 100] at construction and by :meth:`clamp_`."""

    def __init__(self, init: float = CLIP_INIT_LOGIT_SCALE):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(init)))
        self.clamp_()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp p into [0, log 100] in place (CLIP's range for the scale: [1, 100])."""
        self.log_scale.clamp_(MIN_LOG_LOGIT_SCALE, MAX_LOG_LOGIT_SCALE)

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp()
