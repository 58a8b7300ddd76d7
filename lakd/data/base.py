"""What every data source yields, and the options every source accepts.

A data source is a map-style dataset of :class:`Item` (one image with its captions). Readers for
real data return :class:`Skipped` instead of an item whose image cannot be read, so one bad file
never stops a run; :func:`drop_skipped` filters a batch and the caller reports the count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class Item:
    """One image and its captions.

    ``captions`` holds every caption of the image (COCO keeps all five); the first one is the
    image's paired caption for metrics that need exactly one. ``label`` is a class index into the
    source's ``classnames`` when the source has classes. ``meta`` holds source-specific fields
    (for the shapes world: the scene).
    """

    id: str
    image: Image.Image
    captions: list[str]
    label: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Skipped:
    """Placeholder for an item whose image could not be used (missing, zero-byte, corrupt)."""

    id: str
    path: str
    reason: str


@dataclass
class SourceOptions:
    """Options shared by every data source (the CLI's ``--image-root``, ``--download``, ...).

    ``csv_sep=None`` detects tab or comma from the header line.
    """

    image_root: str | None = None
    download: bool = False
    allow_outside_root: bool = False
    csv_img_key: str = "filepath"
    csv_caption_key: str = "title"
    csv_sep: str | None = None


def drop_skipped(batch: list[Item | Skipped]) -> tuple[list[Item], list[Skipped]]:
    """Split a list of dataset outputs into usable items and skipped ones."""
    items = [b for b in batch if isinstance(b, Item)]
    skipped = [b for b in batch if isinstance(b, Skipped)]
    return items, skipped


def describe_skipped(skipped: list[Skipped], limit: int = 3) -> str:
    """One line: how many items were skipped and the first few paths with reasons."""
    head = ", ".join(f"{s.path} ({s.reason})" for s in skipped[:limit])
    more = f", ... and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return f"skipped {len(skipped)} unreadable image(s): {head}{more}"
