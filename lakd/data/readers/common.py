"""Pieces every reader shares: lazy image decoding, data-root confinement, a file-backed dataset."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from lakd.data.base import Item, Skipped
from lakd.errors import LakdError


class UnreadableImage(Exception):
    """An image that cannot be used; ``str(err)`` is the short reason stored in :class:`Skipped`."""


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes (any format PIL reads) to a fully loaded RGB image.

    Raises :class:`UnreadableImage` for empty, truncated, unrecognised or oversized data.
    """
    if not data:
        raise UnreadableImage("zero-byte file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise UnreadableImage("not an image (format not recognised)") from None
    except Image.DecompressionBombError:
        raise UnreadableImage("image too large (PIL decompression-bomb limit)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise UnreadableImage(f"corrupt image ({err})") from None


def load_image_file(path: str | os.PathLike) -> Image.Image:
    """Read and decode the image file at ``path`` (RGB); :class:`UnreadableImage` when it can't be used."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UnreadableImage("missing file") from None
    except IsADirectoryError:
        raise UnreadableImage("a folder, not a file") from None
    except PermissionError:
        raise UnreadableImage("permission denied") from None
    except OSError as err:
        raise UnreadableImage(f"unreadable ({err.strerror or err})") from None
    return decode_image(data)


def class_prompt(classname: str) -> str:
    """The default caption of a classification item: ``"a photo of a {classname}."`` (CLIP's prompt)."""
    return f"a photo of a {classname}."


def is_outside(root: str, path: str) -> bool:
    """Whether ``path`` (relative to ``root``, or absolute) lies outside the absolute folder ``root``.

    Lexical check after normalising ``..``: symlinks inside the root are trusted.
    """
    full = os.path.normpath(os.path.join(root, path))
    try:
        return os.path.commonpath([root, full]) != root
    except ValueError:  # different drives on Windows
        return True


def first_outside(root: str, paths: Iterable[str]) -> tuple[int, str] | None:
    """``(position, path)`` of the first path that escapes ``root`` (see :func:`is_outside`), else None."""
    for position, path in enumerate(paths):
        if is_outside(root, path):
            return position, path
    return None


def image_root(source: str, root: str | os.PathLike) -> str:
    """Absolute, normalised image root; :class:`LakdError` naming ``source`` when it is not a folder."""
    path = Path(root)
    if not path.is_dir():
        raise LakdError(f"{source}: image root {path} is not a folder")
    return os.path.normpath(os.path.abspath(path))


def check_query(source: str, query: dict[str, str], allowed: Sequence[str] = ()) -> None:
    """Reject spec options (``?key=value``) that the reader does not understand."""
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise LakdError(f"{source}: unknown option(s) {', '.join(unknown)} (accepted: {accepted})")


class FileImageDataset(Dataset):
    """Items whose images are files on disk, decoded on access.

    ``ids[i]`` names item i; its image file is ``files[i]`` joined to ``root`` (an absolute
    ``files[i]`` stands alone); ``captions[i]`` is its caption list, or one caption string;
    ``labels[i]`` is its class index (no ``labels`` for caption data). ``source`` is the spec the data
    came from and ``classnames`` the class names (None for caption data). Paths are joined on access
    so that opening a million-row CSV stays fast.
    """

    def __init__(
        self,
        source: str,
        root: str,
        ids: Sequence[str],
        files: Sequence[str],
        captions: Sequence[str | list[str]],
        labels: Sequence[int] | None = None,
        classnames: list[str] | None = None,
    ):
        if not len(ids):
            raise LakdError(f"{source}: no usable rows")
        self.source = source
        self.root = root
        self.ids = ids
        self.files = files
        self.captions = captions
        self.labels = labels
        self.classnames = classnames

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, index: int) -> str:
        """The image file of item ``index``."""
        return os.path.join(self.root, self.files[index])

    def __getitem__(self, index: int) -> Item | Skipped:
        path = self.path(index)
        try:
            image = load_image_file(path)
        except UnreadableImage as err:
            return Skipped(id=self.ids[index], path=path, reason=str(err))
        captions = self.captions[index]
        return Item(
            id=self.ids[index],
            image=image,
            captions=[captions] if isinstance(captions, str) else list(captions),
            label=self.labels[index] if self.labels is not None else None,
            meta={"path": path},
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={self.source!r}, n={len(self)})"
