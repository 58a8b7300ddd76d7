"""Export the shapes world to a folder, and read such a folder back as a data source.

Folder layout (``lakd data shapes --out DIR``)::

    images/<id>.png     the rendered scenes
    captions.csv        open_clip CSV convention: TAB-separated, ``filepath`` + ``title`` (primary
                        caption), plus scene attributes (shapes, colours, sizes comma-joined; positions
                        as JSON [[x, y], ...]) and ``captions`` (all, joined by " | ")
    scenes.jsonl        one JSON record per item: id, filepath, label, classname, captions, the scene
                        (``objects``) and the item's other meta fields; probes add ``negatives``
    lakd_shapes.json    marker: split, n, seed, image_size, options, lakd version, classnames
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

import lakd
from lakd.data.base import Item, Skipped, SourceOptions
from lakd.data.readers.common import UnreadableImage, is_outside, load_image_file
from lakd.data.shapes.dataset import TEMPLATES, ShapesProbes, ShapesWorld
from lakd.data.shapes.probes import PROBE_CONDITIONS
from lakd.data.shapes.world import MAX_OBJECTS
from lakd.errors import LakdError
from lakd.io import atomic_dir, clear_stale

MARKER = "lakd_shapes.json"
SCENES = "scenes.jsonl"
CSV = "captions.csv"
FORMAT = "lakd-shapes"
RECORD_FIELDS = ("id", "filepath", "label", "classname", "captions", "negatives")  # the rest is Item.meta
CAPTION_JOIN = " | "


def _csv_row(item: Item, filepath: str, classnames: list[str]) -> dict[str, Any]:
    objects = item.meta["objects"]
    row = {
        "filepath": filepath,
        "title": item.captions[0],
        "id": item.id,
        "n_objects": len(objects),
        "label": item.label,
        "classname": classnames[item.label],
        "shapes": ",".join(o["shape"] for o in objects),
        "colours": ",".join(o["colour"] for o in objects),
        "sizes": ",".join(o["size"] for o in objects),
        "positions": json.dumps([[o["x"], o["y"]] for o in objects], separators=(",", ":")),
        "captions": CAPTION_JOIN.join(item.captions),
    }
    if "condition" in item.meta:
        row["condition"] = item.meta["condition"]
    return row


def export_shapes(
    out_dir: str | os.PathLike,
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    image_size: int = 64,
    max_objects: int = MAX_OBJECTS,
    noise: bool = True,
    k: int = 3,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``n`` items of ``split`` (``probes``: probe items with ``k`` negatives) to ``out_dir``.

    The folder is built under a temporary name and renamed when complete; an existing ``out_dir``
    is an error unless ``overwrite``, which replaces only a folder written by this function (its
    marker file) or an empty one. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    clear_stale(out_dir)  # what a killed export left beside it
    if out_dir.exists() and not (out_dir.is_dir() and (is_shapes_folder(out_dir) or not any(out_dir.iterdir()))):
        # `overwrite` would not replace it either: advise only what works
        even = ", even with `overwrite`" if overwrite else ""
        raise LakdError(
            f"{out_dir}: exists and is not a shapes folder (no {MARKER}); not replacing it{even}; choose another `out`"
        )
    if out_dir.exists() and not overwrite:
        raise LakdError(f"{out_dir}: already exists (use `overwrite` to replace it)")
    if split == "probes":
        data: ShapesWorld | ShapesProbes = ShapesProbes(split, n, seed, k, image_size, max_objects, noise)
    else:
        data = ShapesWorld(split, n, seed, image_size, max_objects, noise)
    marker = {
        "format": FORMAT,
        "format_version": 1,
        "kind": "probes" if isinstance(data, ShapesProbes) else "world",
        "split": split,
        "n": len(data),
        "seed": seed,
        "image_size": image_size,
        "max_objects": max_objects,
        "noise": noise,
        "lakd_version": lakd.__version__,
        "classnames": data.classnames,
    }
    if isinstance(data, ShapesProbes):
        marker |= {"k": data.k, "conditions": list(PROBE_CONDITIONS)}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        rows, records = [], []
        for i in tqdm(range(len(data)), desc=f"shapes {split}", unit="img", disable=not progress):
            item = data[i]
            filepath = f"images/{item.id}.png"
            item.image.save(tmp / filepath)
            rows.append(_csv_row(item, filepath, data.classnames))
            classname = data.classnames[item.label]
            record = {"id": item.id, "filepath": filepath, "label": item.label, "classname": classname}
            record |= {"captions": item.captions, **item.meta}
            if isinstance(data, ShapesProbes):
                record["negatives"] = item.captions[1:]
            records.append(json.dumps(record))
        pd.DataFrame(rows).to_csv(tmp / CSV, sep="\t", index=False)
        (tmp / SCENES).write_text("\n".join(records) + "\n", encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return out_dir


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LakdError(f"{path}: not a readable JSON file ({err})") from None


def _read_records(root: Path, allow_outside_root: bool) -> list[dict[str, Any]]:
    """Parse and validate scenes.jsonl; each error names the file, line and field."""
    path = root / SCENES
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise LakdError(f"{path}: cannot read ({err})") from None
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LakdError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise LakdError(f"{where}: expected a JSON object")
        for key, ok in (
            ("id", lambda v: isinstance(v, str) and v),
            ("filepath", lambda v: isinstance(v, str) and v),
            ("captions", lambda v: isinstance(v, list) and v and all(isinstance(c, str) for c in v)),
            ("label", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool))),
            ("objects", lambda v: isinstance(v, list) and v),
        ):
            if key not in record:
                raise LakdError(f"{where}: missing field {key!r}")
            if not ok(record[key]):
                raise LakdError(f"{where}: field {key!r} has an invalid value {record[key]!r}")
        if not allow_outside_root and is_outside(str(root.resolve()), record["filepath"]):
            raise LakdError(
                f"{where}: filepath {record['filepath']!r} escapes the folder (use `allow_outside_root` to allow it)"
            )
        records.append(record)
    return records


class ShapesFolder:
    """A folder written by :func:`export_shapes`, read back as the same kind of items.

    ``__getitem__`` returns :class:`~lakd.data.base.Skipped` for a missing, empty or corrupt PNG.
    """

    def __init__(self, root: str | os.PathLike, options: SourceOptions | None = None):
        self.root = Path(root)
        options = options or SourceOptions()
        self.marker = _read_json(self.root / MARKER)
        if not isinstance(self.marker, dict) or self.marker.get("format") != FORMAT:
            raise LakdError(f"{self.root / MARKER}: not a lakd shapes marker (expected format {FORMAT!r})")
        classnames = self.marker.get("classnames")
        if not isinstance(classnames, list) or not all(isinstance(c, str) for c in classnames):
            raise LakdError(f"{self.root / MARKER}: field 'classnames' must be a list of names")
        self.classnames: list[str] = classnames
        self.templates: tuple[str, ...] = TEMPLATES
        self.split = self.marker.get("split")
        self.max_image_bytes = options.max_image_bytes
        self.records = _read_records(self.root, options.allow_outside_root)
        if not self.records:
            raise LakdError(f"{self.root / SCENES}: no items")
        scenes = self.root / SCENES
        if self.marker.get("n") != len(self.records):
            raise LakdError(
                f"{scenes}: has {len(self.records)} items but {MARKER} says n={self.marker.get('n')}"
            )
        for record in self.records:
            if record["label"] is not None and not 0 <= record["label"] < len(classnames):
                raise LakdError(
                    f"{scenes}: item {record['id']} has label {record['label']} outside classnames"
                )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Item | Skipped:
        record = self.records[i]
        path = self.root / record["filepath"]
        try:
            image = load_image_file(path, self.max_image_bytes)
        except UnreadableImage as err:
            return Skipped(id=record["id"], path=str(path), reason=str(err))
        meta = {key: value for key, value in record.items() if key not in RECORD_FIELDS}
        return Item(
            id=record["id"], image=image, captions=list(record["captions"]), label=record["label"], meta=meta
        )


def is_shapes_folder(path: Path) -> bool:
    """A folder holding the marker file that ``lakd data shapes`` writes."""
    return path.is_dir() and (path / MARKER).is_file()


def open_shapes_folder(path: str, query: dict[str, str], options: SourceOptions) -> ShapesFolder:
    """A folder containing ``lakd_shapes.json`` (written by ``lakd data shapes``)."""
    if query:
        raise LakdError(f"{path}: a shapes folder takes no options (got {', '.join(query)})")
    return ShapesFolder(path, options)
