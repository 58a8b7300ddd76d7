"""The training data: a resumable, rank-aware order of items, seeded caption choice and augmentation,
collation for the student (and an online teacher with its own preprocessing), and cached teacher
features joined by item id.

Order: epoch ``e`` visits the items in the permutation ``default_rng([seed, e])``; step ``s`` is batch
``s mod steps_per_epoch`` of epoch ``s div steps_per_epoch`` (the last incomplete batch of an epoch is
dropped), and rank ``r`` of ``W`` takes the ``r``-th of ``W`` equal slices of that global batch. So
the data of every step is a pure function of ``(seed, step)``: a resumed run, or the same run on
another number of ranks, sees the same items. The caption an item shows and its crop are drawn from
``default_rng([seed, epoch, index])``, the same in any worker process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lakd.data import Item, Skipped, drop_skipped
from lakd.data.sources import source_ids
from lakd.data.store import EmbeddingStore
from lakd.errors import LakdError

CROP_SCALE = (0.8, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``n`` items that epoch ``epoch`` visits."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class StepSampler:
    """Batch sampler of one rank: for each step from ``start`` to ``stop``, the ``(epoch, index)``
    pairs of this rank's slice of the global batch (module docstring)."""

    def __init__(self, n: int, batch_size: int, *, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise LakdError(f"data.batch_size: {batch_size} is not divisible by the {world} ranks")
        if n < batch_size:
            raise LakdError(f"data.batch_size: {batch_size} is more than the {n} training items")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.steps_per_epoch = n // batch_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def step_items(self, step: int) -> list[tuple[int, int]]:
        """This rank's ``(epoch, index)`` pairs of step ``step``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = epoch_order(self.n, self.seed, epoch)
        batch = order[k * self.batch_size : (k + 1) * self.batch_size]
        local = self.batch_size // self.world
        return [(epoch, int(i)) for i in batch[self.rank * local : (self.rank + 1) * local]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield self.step_items(step)


def random_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random resized crop (area ``CROP_SCALE``, aspect ``CROP_RATIO``) back to the image's size."""
    width, height = image.size
    area = width * height * rng.uniform(*CROP_SCALE)
    ratio = float(np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1]))))
    w = int(round(min(width, np.sqrt(area * ratio))))
    h = int(round(min(height, np.sqrt(area / ratio))))
    left = int(rng.integers(0, width - w + 1))
    top = int(rng.integers(0, height - h + 1))
    return image.crop((left, top, left + w, top + h)).resize((width, height), Image.BILINEAR)


class TrainItems(Dataset):
    """``dataset[(epoch, index)]`` -> ``(index, item or Skipped, caption index)``, the item's image
    cropped when ``augment`` is ``crop``. ``cache``: keep every item read from the source in memory
    (rendered or decoded once; the crop is still drawn per epoch); each DataLoader worker keeps its own."""

    def __init__(self, source, *, seed: int, caption: str, augment: str, cache: bool = False):
        self.source, self.seed, self.caption, self.augment = source, seed, caption, augment
        self.cache: dict[int, Item | Skipped] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.source)

    def read(self, index: int) -> Item | Skipped:
        """The source's item ``index`` (from the cache when there is one)."""
        if self.cache is None:
            return self.source[index]
        if index not in self.cache:
            self.cache[index] = self.source[index]
        return self.cache[index]

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Item | Skipped, int]:
        epoch, index = key
        item = self.read(index)
        if isinstance(item, Skipped):
            return index, item, 0
        if not item.captions:
            return index, Skipped(item.id, item.id, "no caption"), 0
        rng = np.random.default_rng([self.seed, epoch, index])
        choice = int(rng.integers(len(item.captions))) if self.caption == "random" else 0
        if self.augment == "crop":
            item = dataclasses.replace(item, image=random_crop(item.image.convert("RGB"), rng))
        return index, item, choice


@dataclass
class TrainBatch:
    """One rank's batch: ``images`` [b, 3, H, W] and ``tokens`` [b, L] for the student, and the
    teacher's own when its preprocessing or tokenizer differ (None otherwise); the chosen caption of
    each item, its position among the item's captions, ids, labels [b] (-1 = none) and what was
    skipped."""

    images: torch.Tensor
    tokens: torch.Tensor
    teacher_images: torch.Tensor | None
    teacher_tokens: torch.Tensor | None
    indices: list[int]
    ids: list[str]
    captions: list[str]
    caption_index: list[int]
    labels: torch.Tensor
    skipped: list[Skipped]

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, rows: slice) -> TrainBatch:
        """The batch restricted to ``rows`` (micro-batches; equal sizes across ranks)."""

        def cut(value: Any) -> Any:
            return value[rows] if value is not None else None

        return TrainBatch(
            *(cut(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "skipped"),
            skipped=self.skipped,
        )

    def to(self, device: torch.device | str) -> TrainBatch:
        def move(value: Any) -> Any:
            return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value

        return TrainBatch(*(move(getattr(self, f.name)) for f in dataclasses.fields(self)))


class TrainCollate:
    """``[(index, item, caption index), ...]`` -> :class:`TrainBatch` (runs in DataLoader workers).
    ``teacher_preprocess`` / ``teacher_tokenizer``: None when the teacher shares the student's."""

    def __init__(self, preprocess, tokenizer, teacher_preprocess=None, teacher_tokenizer=None):
        self.preprocess, self.tokenizer = preprocess, tokenizer
        self.teacher_preprocess, self.teacher_tokenizer = teacher_preprocess, teacher_tokenizer

    def __call__(self, entries: list[tuple[int, Item | Skipped, int]]) -> TrainBatch:
        items, skipped = drop_skipped([item for _, item, _ in entries])
        kept = [(index, item, choice) for index, item, choice in entries if isinstance(item, Item)]
        captions = [item.captions[choice] for _, item, choice in kept]
        images = [item.image for item in items]
        return TrainBatch(
            images=torch.stack([self.preprocess(image) for image in images]),
            tokens=self.tokenizer(captions),
            teacher_images=(
                torch.stack([self.teacher_preprocess(image) for image in images])
                if self.teacher_preprocess is not None
                else None
            ),
            teacher_tokens=self.teacher_tokenizer(captions) if self.teacher_tokenizer is not None else None,
            indices=[index for index, _, _ in kept],
            ids=[item.id for item in items],
            captions=captions,
            caption_index=[choice for _, _, choice in kept],
            labels=torch.tensor([-1 if item.label is None else item.label for item in items], dtype=torch.int64),
            skipped=skipped,
        )


class CachedTeacher:
    """Teacher features of the training data from an embedding store, joined by item id.

    The store holds every caption of every item; a step takes the item's image row and the row of
    the caption the student sees, and checks that the caption text is the same (a store of other data
    is caught at the first batch). ``logit_scale``: the teacher's, as recorded by ``lakd embed``.
    """

    def __init__(self, store: EmbeddingStore, *, dtype: torch.dtype = torch.float32):
        self.path = store.path
        self.image = store.load("image").to(dtype)
        self.text = store.load("text").to(dtype)
        self.captions = store.captions()
        self.row = {item_id: row for row, item_id in enumerate(store.ids())}
        rows: list[list[int]] = [[] for _ in self.row]
        for text_row, item_row in enumerate(store.text_item().tolist()):
            rows[item_row].append(text_row)
        self.caption_rows = rows
        self.logit_scale = store.meta.get("logit_scale")

    @property
    def dim(self) -> int:
        return self.image.shape[1]

    def check_covers(self, source, spec: str) -> None:
        """LakdError naming the first few training items the store lacks (when the source lists its
        ids without reading images; otherwise the first batch that meets one fails)."""
        ids = source_ids(source)
        if ids is None:
            return
        missing = [item_id for item_id in ids if item_id not in self.row]
        if missing:
            raise LakdError(
                f"{self.path}: the teacher store lacks {len(missing)} of the {len(ids)} training items of "
                f"{spec} (first: {', '.join(missing[:3])}); embed the training data with the teacher "
                "(lakd embed --data <the training data>)"
            )

    def features(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's raw image and caption features of ``batch`` [b, d_t] each."""
        image_rows, text_rows = [], []
        for item_id, choice, caption in zip(batch.ids, batch.caption_index, batch.captions, strict=True):
            row = self.row.get(item_id)
            if row is None:
                raise LakdError(f"{self.path}: the teacher store has no item {item_id!r} (embedded from other data?)")
            if choice >= len(self.caption_rows[row]):
                raise LakdError(
                    f"{self.path}: item {item_id!r} has {len(self.caption_rows[row])} caption(s) in the store, "
                    f"the data has more"
                )
            text_row = self.caption_rows[row][choice]
            if self.captions[text_row] != caption:
                raise LakdError(
                    f"{self.path}: caption {choice} of item {item_id!r} is {self.captions[text_row]!r} in the "
                    f"store but {caption!r} in the training data; embed the training data again"
                )
            image_rows.append(row)
            text_rows.append(text_row)
        return self.image[image_rows], self.text[text_rows]
