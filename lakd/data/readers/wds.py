"""Webdataset tar shards with random access: ``wds:PATTERN``.

PATTERN is a brace pattern (``shards/train-{000..009}.tar``, ``{a,b}``), a glob (``shards/*.tar``;
``?`` cannot be used, it starts the spec's options) or one path. Shards are plain (uncompressed)
tar files as webdataset writes them. Opening reads only the tar headers, with the standard
``tarfile`` module, and records where each member's bytes lie; ``__getitem__`` then reads one
image by seeking into its shard, so the data set is map-style and safe to use in DataLoader workers.

Samples follow webdataset's convention: members ``dir/key.ext`` with the same key (the path up to
the first dot of the file name) form one sample. The image comes from ``jpg``/``jpeg``/``png``/
``webp``; the caption from ``txt``, else from a ``json`` member's ``"caption"`` (a string or a list
of strings); a ``cls`` member holding a class index (an integer in 0..2^31-1) becomes the label. The
item id is the key (prefixed with the shard's file name when a key occurs in more than one shard).
Members without an image are ignored. A sample is skipped and reported, like an unreadable image,
when its image is over the source's ``max_image_bytes``, a caption or label member is over 1 MiB,
its caption JSON does not parse (nested too deeply included) or its label is no class index.
"""

from __future__ import annotations

import glob
import json
import re
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from lakd.data.base import MAX_IMAGE_BYTES, Item, Skipped, SourceOptions
from lakd.data.readers.common import UnreadableImage, check_image_size, check_query, decode_image
from lakd.errors import LakdError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
MEMBER_NAME = re.compile(r"^((?:.*/)?[^./][^./]*)\.([^/]+)$")
BRACE_GROUP = re.compile(r"\{([^{}]*)\}")
NUMERIC_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")
GLOB_CHARS = ("*", "[")
MAX_SHARD_NAMES = 100_000  # the most shard names one pattern may expand to
MAX_TEXT_BYTES = 1 << 20  # a caption (.txt, .json) or label (.cls) member of more is skipped
MAX_LABEL = 2**31 - 1  # labels are class indices, stored as int64 (-1: no label)


def expand_braces(pattern: str, limit: int = MAX_SHARD_NAMES) -> list[str]:
    """Expand ``{000..009}`` numeric ranges (zero padding kept) and ``{a,b}`` lists, left to right;
    a pattern of more than ``limit`` names is a LakdError (before any name is made)."""
    groups = list(BRACE_GROUP.finditer(pattern))
    total = 1
    for match in groups:
        numeric = NUMERIC_RANGE.match(match.group(1))
        total *= int(numeric[2]) - int(numeric[1]) + 1 if numeric else len(match.group(1).split(","))
        if total > limit:
            raise LakdError(f"wds:{pattern}: names more than {limit} shards")
    return _expand(pattern)


def _expand(pattern: str) -> list[str]:
    match = BRACE_GROUP.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    numeric = NUMERIC_RANGE.match(body)
    if numeric:
        lo, hi = numeric.groups()
        if int(lo) > int(hi):
            raise LakdError(f"wds:{pattern}: empty range {{{body}}}")
        width = len(lo) if len(lo) == len(hi) else 0
        choices = [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
    else:
        choices = body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [head + choice + rest for choice in choices for rest in _expand(tail)]


def shard_files(pattern: str) -> list[Path]:
    """The shard files named by ``pattern``; :class:`LakdError` naming a missing one."""
    shards: list[Path] = []
    for piece in expand_braces(pattern):
        if any(c in piece for c in GLOB_CHARS):
            matches = sorted(glob.glob(piece))
            if not matches:
                raise LakdError(f"wds:{pattern}: {piece} matches no files")
            shards.extend(Path(m) for m in matches)
        else:
            shards.append(Path(piece))
    for shard in shards:
        if not shard.is_file():
            raise LakdError(f"wds:{pattern}: shard {shard} not found")
    return shards


@dataclass(frozen=True)
class Member:
    """Where one member's bytes lie: shard index, byte offset in the shard file, size."""

    shard: int
    offset: int
    size: int


def index_shard(shard: Path, shard_index: int) -> dict[str, dict[str, Member]]:
    """``{key: {ext: Member}}`` for the regular files of one uncompressed tar, in file order."""
    samples: dict[str, dict[str, Member]] = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for info in tar:
                match = MEMBER_NAME.match(info.name)
                if not info.isfile() or match is None:
                    continue
                key, ext = match.groups()
                samples.setdefault(key, {})[ext.lower()] = Member(shard_index, info.offset_data, info.size)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise LakdError(f"{shard}: not a readable uncompressed tar shard ({err})") from None
    return samples


class WebDataset(Dataset):
    """Map-style view of webdataset shards; see the module docstring for the sample convention."""

    def __init__(self, pattern: str, max_image_bytes: int = MAX_IMAGE_BYTES):
        self.source = f"wds:{pattern}"
        self.classnames = None
        self.max_image_bytes = max_image_bytes
        self.shards = shard_files(pattern)
        per_shard = [index_shard(shard, i) for i, shard in enumerate(self.shards)]
        keys = [key for samples in per_shard for key, members in samples.items() if _image_ext(members)]
        repeated = {key for key, n in Counter(keys).items() if n > 1}
        self.ids: list[str] = []
        self.members: list[dict[str, Member]] = []
        for shard, samples in zip(self.shards, per_shard, strict=True):
            for key, members in samples.items():
                if _image_ext(members):
                    self.ids.append(f"{shard.name}/{key}" if key in repeated else key)
                    self.members.append(members)
        if not self.ids:
            raise LakdError(f"{self.source}: no usable rows (no sample has a {'/'.join(IMAGE_EXTS)} image)")

    def __len__(self) -> int:
        return len(self.ids)

    def _read(self, member: Member) -> bytes:
        try:
            with open(self.shards[member.shard], "rb") as f:
                f.seek(member.offset)
                data = f.read(member.size)
        except OSError as err:
            raise UnreadableImage(f"unreadable shard ({err.strerror or err})") from None
        if len(data) != member.size:
            raise UnreadableImage(f"truncated shard ({len(data)} of {member.size} bytes)")
        return data

    def __getitem__(self, index: int) -> Item | Skipped:
        members, sample_id = self.members[index], self.ids[index]
        ext = _image_ext(members)
        image_member = members[ext]
        path = f"{self.shards[image_member.shard]}:{sample_id}.{ext}"
        try:
            check_image_size(image_member.size, self.max_image_bytes)
            image = decode_image(self._read(image_member))
            captions = self._captions(members)
            label = self._label(members["cls"]) if "cls" in members else None
        except UnreadableImage as err:
            return Skipped(id=sample_id, path=path, reason=str(err))
        except (UnicodeDecodeError, ValueError) as err:
            return Skipped(id=sample_id, path=path, reason=f"unreadable caption or label ({err})")
        if not captions:
            return Skipped(id=sample_id, path=path, reason="no caption (.txt or .json 'caption')")
        return Item(id=sample_id, image=image, captions=captions, label=label, meta={"path": path})

    def _text(self, member: Member, what: str) -> str:
        """A caption or label member as text; ValueError when it is over :data:`MAX_TEXT_BYTES`."""
        if member.size > MAX_TEXT_BYTES:
            raise ValueError(f"{what} of {member.size} bytes, over the {MAX_TEXT_BYTES} byte limit")
        return self._read(member).decode("utf-8")

    def _label(self, member: Member) -> int:
        """The integer in a ``cls`` member: a class index, 0 <= label <= :data:`MAX_LABEL`."""
        text = self._text(member, "label").strip()
        if not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_LABEL)) or int(text) > MAX_LABEL:
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise ValueError(f"label {shown!r} is not a class index (an integer in 0..{MAX_LABEL})")
        return int(text)

    def _captions(self, members: dict[str, Member]) -> list[str]:
        if "txt" in members:
            text = self._text(members["txt"], "caption").strip()
            return [text] if text else []
        if "json" in members:
            try:
                record = json.loads(self._text(members["json"], "caption JSON"))
            except RecursionError:
                raise ValueError("caption JSON nested too deeply") from None
            caption = record.get("caption") if isinstance(record, dict) else None
            candidates = caption if isinstance(caption, list) else [caption]
            return [c.strip() for c in candidates if isinstance(c, str) and c.strip()]
        return []

    def __repr__(self) -> str:
        return f"WebDataset(source={self.source!r}, shards={len(self.shards)}, n={len(self)})"


def _image_ext(members: dict[str, Member]) -> str | None:
    return next((ext for ext in IMAGE_EXTS if ext in members), None)


def open_webdataset(pattern: str, query: dict[str, str], options: SourceOptions) -> WebDataset:
    """Open ``wds:PATTERN`` (no options)."""
    check_query(f"wds:{pattern}", query)
    return WebDataset(pattern, options.max_image_bytes)
