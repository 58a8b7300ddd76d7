"""COCO captions annotation files (``captions_train2017.json`` and the like).

The JSON holds ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``, ``caption``).
Every caption of an image is kept, in file order; the item id is the COCO image id as a string
(so ``1`` and ``"1"`` name the same image, and both in ``images`` is a duplicate).
Images are looked up under the spec's ``root`` option (``annotations.json?root=DIR``), or, when
that is not given, under the folder that holds the JSON file. Images without any (non-empty) caption are left out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lakd.data.base import SourceOptions
from lakd.data.readers.common import FileImageDataset, check_query, first_outside, image_root
from lakd.errors import LakdError


def is_json(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".json"


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LakdError(f"{path}: annotation file not found") from None
    except IsADirectoryError:
        raise LakdError(f"{path}: is a folder, expected a COCO captions JSON file") from None
    except UnicodeDecodeError as err:
        raise LakdError(f"{path}: not valid UTF-8 (byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise LakdError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None
    except RecursionError:
        raise LakdError(f"{path}: JSON nested too deeply to read") from None


def _field(path: Path, where: str, record: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    """``record[name]``, checked to be a ``kind``; :class:`LakdError` naming the file and field otherwise."""
    if not isinstance(record, dict):
        raise LakdError(f"{path}: {where} is not a JSON object")
    if name not in record:
        raise LakdError(f"{path}: {where} has no {name!r} field")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise LakdError(f"{path}: {where}.{name} has an unexpected type ({type(value).__name__})")
    return value


def read_coco(ann_file: str | os.PathLike, root: str | os.PathLike, options: SourceOptions, source: str):
    """Dataset of COCO images with all their captions; ``root`` is the image folder.

    Raises :class:`LakdError` naming the file and field for missing or mistyped fields, annotations
    of unknown images, duplicate image ids, and file names that leave ``root`` (unless
    ``options.allow_outside_root``).
    """
    path = Path(ann_file)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise LakdError(f"{path}: expected a JSON object with 'images' and 'annotations'")
    images = _field(path, "top level", data, "images", list)
    annotations = _field(path, "top level", data, "annotations", list)

    # ids are compared as strings, the item ids they become: 1 and "1" are one image
    file_names: dict[str, str] = {}
    for i, image in enumerate(images):
        image_id = _field(path, f"images[{i}]", image, "id", (int, str))
        key = str(image_id)
        if key in file_names:
            raise LakdError(f"{path}: images[{i}].id {image_id!r} appears twice (item id {key!r})")
        file_names[key] = _field(path, f"images[{i}]", image, "file_name", str)

    captions: dict[str, list[str]] = {}
    for i, annotation in enumerate(annotations):
        image_id = _field(path, f"annotations[{i}]", annotation, "image_id", (int, str))
        caption = _field(path, f"annotations[{i}]", annotation, "caption", str)
        if str(image_id) not in file_names:
            raise LakdError(f"{path}: annotations[{i}].image_id {image_id!r} is not in 'images'")
        if caption.strip():
            captions.setdefault(str(image_id), []).append(caption.strip())

    kept = [image_id for image_id in file_names if captions.get(image_id)]
    if not kept:
        raise LakdError(f"{source}: no usable rows (no image has a caption)")
    root_dir = image_root(source, root)
    if not options.allow_outside_root:
        hit = first_outside(root_dir, (file_names[i] for i in kept))
        if hit is not None:
            raise LakdError(
                f"{path}: file_name {hit[1]!r} of image {kept[hit[0]]} is outside the image root {root_dir} "
                "(use `allow_outside_root` to allow it)"
            )
    return FileImageDataset(
        source=source,
        ids=kept,
        root=root_dir,
        files=[file_names[image_id] for image_id in kept],
        captions=[captions[image_id] for image_id in kept],
        max_image_bytes=options.max_image_bytes,
    )


def open_coco(path: str, query: dict[str, str], options: SourceOptions) -> FileImageDataset:
    """Open ``annotations.json[?root=DIR]``: images under ``root`` or, by default, the JSON's folder."""
    check_query(path, query, ("root",))
    return read_coco(path, query.get("root") or Path(path).parent, options, source=path)
