"""What every benchmark and experiment record says about the machine it ran on: CPU count, the load
average (other work on the machine lowers the rates), torch's thread count, library versions and the
platform, so results from different machines and conditions can be compared."""

from __future__ import annotations

import os
import platform
from typing import Any


def load_averages() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    import numpy as np
    import open_clip
    import PIL
    import torch

    import lakd

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1_5_15min": load_averages(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "lakd": lakd.__version__,
    }
