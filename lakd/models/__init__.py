"""Model specs -> open_clip models; lakd's tiny configs; safe checkpoint I/O.

Importing this package registers the shipped configs with open_clip as ``lakd-NAME``.
"""

from lakd.models.build import list_lakd_configs, register_lakd_configs
from lakd.models.checkpoint import export_local_dir, load_checkpoint, save_checkpoint
from lakd.models.specs import load_model, register_scheme

register_lakd_configs()

__all__ = [
    "export_local_dir",
    "list_lakd_configs",
    "load_checkpoint",
    "load_model",
    "register_scheme",
    "save_checkpoint",
]
