"""Pieces every reader shares: lazy image decoding, data-root confinement, a file-backed dataset."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from lakd.data.base import MAX_IMAGE_BYTES, Item, Skipped
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


def describe_bytes(n: int) -> str:
    """``67108864`` -> ``"64.0 MiB"`` (B, KiB, MiB, GiB, TiB)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def check_image_size(size: int, max_bytes: int) -> None:
    """:class:`UnreadableImage` when an image of ``size`` bytes is over the limit ``max_bytes``."""
    if size > max_bytes:
        raise UnreadableImage(f"file of {describe_bytes(size)}, over the {describe_bytes(max_bytes)} image size limit")


FILE_KINDS = (
    (stat.S_ISDIR, "a folder, not a file"),
    (stat.S_ISCHR, "not a regular file (a character device)"),
    (stat.S_ISBLK, "not a regular file (a block device)"),
    (stat.S_ISFIFO, "not a regular file (a named pipe)"),
    (stat.S_ISSOCK, "not a regular file (a socket)"),
)


def load_image_file(path: str | os.PathLike, max_bytes: int = MAX_IMAGE_BYTES) -> Image.Image:
    """Read and decode the image file at ``path`` (RGB); :class:`UnreadableImage` when it can't be used.

    Only a regular file is read (a symlink counts as what it points to: a link to ``/dev/zero``, a
    pipe or a folder is refused before a byte is read), and at most ``max_bytes`` of it: a larger
    file is refused, whatever size it claims.
    """
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer; it is refused just below
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise UnreadableImage("missing file") from None
    except IsADirectoryError:
        raise UnreadableImage("a folder, not a file") from None
    except PermissionError:
        raise UnreadableImage("permission denied") from None
    except OSError as err:
        raise UnreadableImage(f"unreadable ({err.strerror or err})") from None
    except ValueError:  # a NUL byte in the name
        raise UnreadableImage("not a valid file name (it holds a NUL byte)") from None
    try:
        mode = os.fstat(fd).st_mode
        for test, reason in FILE_KINDS:
            if test(mode):
                raise UnreadableImage(reason)
        if not stat.S_ISREG(mode):
            raise UnreadableImage("not a regular file")
        check_image_size(os.fstat(fd).st_size, max_bytes)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)  # a file that grows, or claims no size (/proc), is still bounded
    except OSError as err:
        raise UnreadableImage(f"unreadable ({err.strerror or err})") from None
    finally:
        os.close(fd)
    check_image_size(len(data), max_bytes)
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
    came from and ``classnames`` the class names (None for caption data); an image file over
    ``max_image_bytes`` (or not a regular file) is skipped (:func:`load_image_file`). Paths are joined on access
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
        max_image_bytes: int = MAX_IMAGE_BYTES,
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
        self.max_image_bytes = max_image_bytes

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, index: int) -> str:
        """The image file of item ``index``."""
        return os.path.join(self.root, self.files[index])

    def __getitem__(self, index: int) -> Item | Skipped:
        path = self.path(index)
        try:
            image = load_image_file(path, self.max_image_bytes)
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
