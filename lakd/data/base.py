"""What every data source yields, and the options every source accepts.

A data source is a map-style dataset of :class:`Item` (one image with its captions). Readers for
real data return :class:`Skipped` instead of an item whose image cannot be read, so one bad file
never stops a run; :func:`drop_skipped` filters a batch and the caller reports the count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from lakd.errors import LakdError


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


LEGACY_OPTION_DEFAULTS = {"image_root": None, "csv_img_key": "filepath", "csv_caption_key": "title", "csv_sep": None}


# the largest image file a reader reads (64 MiB); a larger file is skipped like a corrupt one
MAX_IMAGE_BYTES = 64 * 1024 * 1024


@dataclass
class SourceOptions:
    """What a data source may do, as opposed to what the data is (that is the data spec and its
    ``?key=value`` options, :mod:`lakd.data.sources`): ``download`` lets torchvision data sets
    download (``--download``); ``allow_outside_root`` accepts image paths that leave the data's
    image folder (``--allow-outside-root``); ``max_image_bytes`` is the largest image file a reader
    reads (default :data:`MAX_IMAGE_BYTES`, 64 MiB; ``--max-image-bytes``): a larger one, or one
    that is not a regular file, is skipped and reported like a corrupt image."""

    download: bool = False
    allow_outside_root: bool = False
    max_image_bytes: int = MAX_IMAGE_BYTES

    def __post_init__(self) -> None:
        value = self.max_image_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LakdError(f"max_image_bytes: must be a positive number of bytes, got {value!r}")

    @classmethod
    def from_meta(cls, values: Any, source: str) -> SourceOptions:
        """The options recorded in a store's ``meta.json`` (``source``: the file, for errors)."""
        if not isinstance(values, dict):
            raise LakdError(f"{source}: field 'source_options' must be an object")
        values = dict(values)
        # stores of lakd 0.1.0 recorded the reader options here; they now live in the data spec
        legacy = {key: values.pop(key) for key in LEGACY_OPTION_DEFAULTS if key in values}
        changed = sorted(key for key, value in legacy.items() if value != LEGACY_OPTION_DEFAULTS[key])
        if changed:
            raise LakdError(
                f"{source}: made with reader option(s) {', '.join(changed)}, which are now part of the data "
                "spec (e.g. captions.csv?root=DIR); embed the data again"
            )
        unknown = sorted(set(values) - {"download", "allow_outside_root", "max_image_bytes"})
        if unknown:
            raise LakdError(f"{source}: field 'source_options' has unknown key(s) {', '.join(unknown)}")
        flags = {key: bool(values[key]) for key in ("download", "allow_outside_root") if key in values}
        limit = values.get("max_image_bytes", MAX_IMAGE_BYTES)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise LakdError(f"{source}: field 'source_options.max_image_bytes' must be a positive integer")
        return cls(**flags, max_image_bytes=limit)


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
