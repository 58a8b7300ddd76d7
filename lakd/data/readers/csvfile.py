"""CSV / TSV image-caption files in open_clip's convention.

Spec: ``captions.csv?img_key=filepath&caption_key=title&sep=tab&root=DIR`` (every option may be left
out). One row per (image, caption) pair: column ``img_key`` (default ``filepath``) holds the image
path, ``caption_key`` (default ``title``) the caption; ``sep`` is detected (tab or comma) unless given,
by character or by name (``tab``, ``comma``, ``semicolon``, ``pipe``, ``\t``). Rows naming the same
image become one item with all its captions (multi-caption data such as COCO exported to CSV). Image
paths are relative to the CSV's folder, or to ``root`` when given; paths that leave that root
(``../``, absolute paths elsewhere) are refused unless ``options.allow_outside_root``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lakd.data.base import SourceOptions
from lakd.data.readers.common import FileImageDataset, check_query, first_outside, image_root
from lakd.errors import LakdError

CSV_SUFFIXES = (".csv", ".tsv")
SEPARATOR_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
SEPARATOR_ALIASES = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def is_csv(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in CSV_SUFFIXES


def detect_separator(path: Path, header: str) -> str:
    """Tab when the header line has a tab, else comma when it has a comma, else by suffix (.tsv: tab)."""
    if "\t" in header:
        return "\t"
    if "," in header:
        return ","
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _header_line(path: Path) -> str:
    with open(path, "rb") as f:
        return f.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")


def _first_undecodable_line(path: Path) -> int | None:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return None


def _separator_hint(columns: list[str], sep: str) -> str:
    if len(columns) != 1:
        return ""
    for other, name in SEPARATOR_NAMES.items():
        if other != sep and other in columns[0]:
            return f"; the header looks {name}-separated, set the separator accordingly (sep={name})"
    return ""


def _read(path: Path, sep: str, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` with every parse failure turned into a one-line :class:`LakdError`. Fields are
    taken by position (``index_col=False``: a row with more fields than the header is an error, not
    a shift of its fields into other columns)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8", index_col=False, **kwargs
            )
    except pd.errors.ParserWarning:
        raise LakdError(
            f"{path}: a row has more fields than the header; quote fields that hold the separator "
            f"({SEPARATOR_NAMES.get(sep, repr(sep))})"
        ) from None
    except UnicodeDecodeError:
        line = _first_undecodable_line(path)
        raise LakdError(f"{path}: line {line}: not valid UTF-8 text (re-save the file as UTF-8)") from None
    except pd.errors.EmptyDataError:
        raise LakdError(f"{path}: empty file (no header, no rows)") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise LakdError(
            f"{path}: cannot parse as {SEPARATOR_NAMES.get(sep, repr(sep))}-separated: {err}"
        ) from None


CSV_OPTIONS = ("img_key", "caption_key", "sep", "root")


def open_csv(path: str, query: dict[str, str], options: SourceOptions) -> FileImageDataset:
    """Open a CSV/TSV of image paths and captions (see module docstring); no images are read here.

    Item ids are the image paths as written in the file; ``classnames`` is None.
    """
    csv_path = Path(path)
    check_query(path, query, CSV_OPTIONS)
    if csv_path.stat().st_size == 0:
        raise LakdError(f"{path}: empty file (no header, no rows)")
    sep = SEPARATOR_ALIASES.get(query["sep"], query["sep"]) if query.get("sep") else None
    if sep is not None and len(sep) != 1:  # pandas would read a longer one as a regular expression
        raise LakdError(
            f"{path}: option sep={query['sep']!r} is not one character nor one of {', '.join(SEPARATOR_ALIASES)}"
        )
    sep = sep or detect_separator(csv_path, _header_line(csv_path))
    img_key, cap_key = query.get("img_key") or "filepath", query.get("caption_key") or "title"

    columns = [str(c) for c in _read(csv_path, sep, nrows=0).columns]
    missing = [key for key in (img_key, cap_key) if key not in columns]
    if missing:
        raise LakdError(
            f"{path}: missing column(s) {', '.join(repr(m) for m in missing)}; columns found: {columns}"
            f"{_separator_hint(columns, sep)}"
        )
    table = _read(csv_path, sep, usecols=[img_key, cap_key])
    if table.empty:
        raise LakdError(f"{path}: no rows (header only)")
    table = table[_non_blank(table[img_key]) & _non_blank(table[cap_key])]
    if table.empty:
        raise LakdError(f"{path}: no usable rows (every row has an empty {img_key!r} or {cap_key!r})")

    root = image_root(path, query.get("root") or csv_path.parent)
    if not options.allow_outside_root:
        _check_inside(path, root, table[img_key])

    ids, captions = group_captions(table[img_key], table[cap_key])
    return FileImageDataset(
        source=path, root=root, ids=ids, files=ids, captions=captions, max_image_bytes=options.max_image_bytes
    )


def group_captions(images: pd.Series, captions: pd.Series) -> tuple[list[str], list[str] | list[list[str]]]:
    """Unique images in first-seen order with their captions in file order.

    One caption string per image when no image repeats, else one list per image.
    """
    codes, uniques = pd.factorize(images, sort=False)
    if len(uniques) == len(images):
        return images.tolist(), captions.tolist()
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes))[:-1]
    grouped = np.split(captions.to_numpy(dtype=object)[order], bounds)
    return list(uniques), [group.tolist() for group in grouped]


def _non_blank(column: pd.Series) -> pd.Series:
    return (column != "") & ~column.str.isspace()


def _check_inside(path: str, root: str, image_paths: pd.Series) -> None:
    """Refuse the first image path that leaves ``root``; only absolute or ``..`` paths are examined."""
    suspicious = image_paths[
        image_paths.str.startswith(("/", "\\")) | image_paths.str.contains("..", regex=False)
    ]
    hit = first_outside(root, suspicious.tolist())
    if hit is not None:
        position, image_path = hit
        row = suspicious.index[position] + 1
        raise LakdError(
            f"{path}: data row {row}: image path {image_path!r} is outside the image root {root} "
            "(use `allow_outside_root` to allow it)"
        )
