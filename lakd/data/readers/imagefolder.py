"""Image folders for zero-shot classification: ``ROOT/<class>/.../<image>``.

Classes are the sorted names of the non-hidden subfolders of ROOT (torchvision ``ImageFolder``
order); ``classnames`` turns underscores into spaces (``golden_retriever`` -> ``golden retriever``).
Each item's label is its class index and its caption defaults to ``"a photo of a {classname}."``.
The item id is the image path relative to ROOT (POSIX separators). A folder that holds a CSV/TSV
file at its top level is not taken as an image folder (it is a captioned data set, e.g. one
written by ``lakd data shapes``).
"""

from __future__ import annotations

import os
from pathlib import Path

from lakd.data.base import SourceOptions
from lakd.data.readers.common import FileImageDataset, check_query, class_prompt
from lakd.data.readers.csvfile import CSV_SUFFIXES
from lakd.errors import LakdError

# torchvision.datasets.folder.IMG_EXTENSIONS, kept here so that sniffing a folder needs no torchvision import
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def class_folders(root: Path) -> list[str]:
    """Sorted names of the non-hidden subfolders of ``root``."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _has_image(folder: Path) -> bool:
    for _dirpath, _dirnames, filenames in os.walk(folder, followlinks=True):
        if any(name.lower().endswith(IMAGE_EXTENSIONS) for name in filenames):
            return True
    return False


def looks_like_image_folder(path: Path) -> bool:
    """A folder without a top-level CSV/TSV in which some class subfolder holds an image."""
    if not path.is_dir():
        return False
    try:
        if any(e.is_file() and e.name.lower().endswith(CSV_SUFFIXES) for e in os.scandir(path)):
            return False
        return any(_has_image(path / name) for name in class_folders(path))
    except OSError:  # unreadable folder: not ours, open_source reports it as unrecognised
        return False


def open_image_folder(path: str, query: dict[str, str], options: SourceOptions) -> FileImageDataset:
    """Index the images under ``path`` (no image is decoded here); see the module docstring."""
    from torchvision.datasets.folder import make_dataset

    check_query(path, query)
    root = Path(path)
    folders = class_folders(root)
    if not folders:
        raise LakdError(f"{path}: no class subfolders (expected ROOT/<class>/<image>)")
    samples = make_dataset(
        root, {name: i for i, name in enumerate(folders)}, extensions=IMAGE_EXTENSIONS, allow_empty=True
    )
    if not samples:
        raise LakdError(
            f"{path}: no usable rows (no images with {', '.join(IMAGE_EXTENSIONS)} in class subfolders)"
        )
    classnames = [name.replace("_", " ") for name in folders]
    return FileImageDataset(
        source=path,
        ids=[Path(file).relative_to(root).as_posix() for file, _ in samples],
        root=str(root),
        files=[file for file, _ in samples],
        captions=[[class_prompt(classnames[label])] for _, label in samples],
        labels=[label for _, label in samples],
        classnames=classnames,
        max_image_bytes=options.max_image_bytes,
    )
