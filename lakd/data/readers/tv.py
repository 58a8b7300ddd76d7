"""torchvision data sets by name: ``tv:NAME?root=DIR[&split=...][&other=...]``.

Options after ``?`` become constructor arguments of ``torchvision.datasets.NAME``, converted to the
type of the argument's default (``size=8``, ``train=false``, ``image_size=3,32,32``). ``split=train|test``
also works for data sets that take ``train=`` instead (CIFAR, MNIST). Nothing is downloaded unless
``options.download``: torchvision is called with ``download=False`` and its "not found" error
becomes a :class:`LakdError` that points at the ``download`` field.

Classification sets (integer targets) get ``classnames`` from the data set's ``classes`` (or
``class 0 .. class K-1`` from ``num_classes``), the label, and the caption
``"a photo of a {classname}."``; caption sets (string or list-of-string targets, e.g. Flickr30k)
keep their captions. The item id is the index in the data set.

``tv:CocoCaptions?root=IMAGES&ann=captions.json`` is read by lakd's own COCO reader
(:mod:`lakd.data.readers.coco`), because torchvision's needs pycocotools.

Note: some torchvision loaders unpickle their own files (CIFAR-10/100 batches are Python pickles).
That is torchvision reading the user's local download of the data set, not lakd reading untrusted input.
"""

from __future__ import annotations

import difflib
import inspect
import numbers
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from lakd.data.base import Item, Skipped, SourceOptions
from lakd.data.readers.coco import read_coco
from lakd.data.readers.common import check_query, class_prompt
from lakd.errors import LakdError

# Constructor arguments a spec may not set: lakd controls these.
RESERVED = ("transform", "target_transform", "transforms", "loader", "is_valid_file", "download")
# Public names of torchvision.datasets that are base classes or helpers, not data sets.
NOT_DATA_SETS = ("VisionDataset", "DatasetFolder", "wrap_dataset_for_transforms_v2")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(source: str, key: str, value: str, default: Any) -> Any:
    """Turn the option text ``value`` into the type of ``default``."""
    try:
        if isinstance(default, bool):
            if value.lower() not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError(f"expected one of {TRUE_WORDS + FALSE_WORDS}")
            return value.lower() in TRUE_WORDS
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            return tuple(int(v) for v in value.split(","))
    except ValueError as err:
        raise LakdError(f"{source}: option {key}={value!r}: {err}") from None
    return value


def constructor_kwargs(
    cls: type, source: str, query: dict[str, str], options: SourceOptions
) -> dict[str, Any]:
    """Keyword arguments for ``cls`` from the spec's options, with ``download`` from ``options``."""
    params = {name: p for name, p in inspect.signature(cls).parameters.items() if p.kind is not p.VAR_KEYWORD}
    accepted = [name for name in params if name not in RESERVED]
    query = dict(query)
    if "split" in query and "split" not in params and "train" in params:
        split = query.pop("split")
        if split not in ("train", "test"):
            raise LakdError(f"{source}: split={split!r}, expected train or test")
        query["train"] = "true" if split == "train" else "false"
    check_query(source, query, accepted)
    kwargs = {key: _convert(source, key, value, params[key].default) for key, value in query.items()}
    missing = [n for n, p in params.items() if p.default is p.empty and n not in kwargs and n not in RESERVED]
    if missing:
        raise LakdError(
            f"{source}: missing option(s) {', '.join(missing)} (write {source.split('?')[0]}?{missing[0]}=...)"
        )
    if "download" in params:
        kwargs["download"] = options.download
    return kwargs


def dataset_class(name: str) -> type:
    """``torchvision.datasets.NAME``; :class:`LakdError` with close matches when there is none."""
    import torchvision.datasets

    names = [n for n in torchvision.datasets.__all__ if n not in NOT_DATA_SETS]
    cls = getattr(torchvision.datasets, name, None) if name in names else None
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise LakdError(f"tv:{name}: no torchvision data set named {name!r}{hint}")
    return cls


def _classnames(dataset: Any) -> list[str] | None:
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, (list, tuple)) and classes:
        return [str(c) for c in classes]
    num_classes = getattr(dataset, "num_classes", None)
    if isinstance(num_classes, int) and num_classes > 0:
        return [f"class {i}" for i in range(num_classes)]
    return None


class TorchvisionDataset(Dataset):
    """A torchvision data set (no transforms) seen as lakd items; ``dataset`` is the wrapped object."""

    def __init__(self, source: str, dataset: Any):
        if len(dataset) == 0:
            raise LakdError(f"{source}: no usable rows (the data set is empty)")
        self.source = source
        self.dataset = dataset
        self.classnames = _classnames(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Item | Skipped:
        sample_id, path = str(index), f"{self.source}[{index}]"
        try:
            sample = self.dataset[index]
            if not (isinstance(sample, tuple) and len(sample) >= 2):
                raise LakdError(f"{self.source}: item {index} is not an (image, target) pair")
            image, target = sample[:2]
            if not isinstance(image, Image.Image):
                raise LakdError(f"{self.source}: item {index} is a {type(image).__name__}, not a PIL image")
            image = image.convert("RGB")
        except UnidentifiedImageError:
            return Skipped(id=sample_id, path=path, reason="not an image (format not recognised)")
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            return Skipped(id=sample_id, path=path, reason=f"unreadable image ({err})")
        label, captions = self._target(target)
        return Item(id=sample_id, image=image, captions=captions, label=label, meta={"index": index})

    def _target(self, target: Any) -> tuple[int | None, list[str]]:
        """``(label, captions)`` from a class index, a caption, or a list of captions."""
        if hasattr(target, "item") and getattr(target, "ndim", None) == 0:
            target = target.item()
        if isinstance(target, numbers.Integral) and not isinstance(target, bool):
            label = int(target)
            name = self.classnames[label] if self.classnames else f"class {label}"
            return label, [class_prompt(name)]
        if isinstance(target, str):
            return None, [target]
        if isinstance(target, (list, tuple)) and target and all(isinstance(t, str) for t in target):
            return None, list(target)
        raise LakdError(
            f"{self.source}: targets of type {type(target).__name__} are not class indices or captions"
        )


def open_torchvision(name: str, query: dict[str, str], options: SourceOptions):
    """Open ``tv:NAME?...`` (see module docstring); never downloads unless ``options.download``."""
    source = f"tv:{name}" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    if name == "CocoCaptions":
        check_query(source, query, ("root", "ann"))
        if "root" not in query or "ann" not in query:
            raise LakdError(f"{source}: needs root=IMAGE_DIR and ann=CAPTIONS_JSON")
        return read_coco(query["ann"], query["root"], options, source=source)
    cls = dataset_class(name)
    kwargs = constructor_kwargs(cls, source, query, options)
    try:
        dataset = cls(**kwargs)
    except (RuntimeError, OSError) as err:
        if options.download:
            raise LakdError(f"{source}: {err}") from None
        raise LakdError(
            f"{source}: not found or unreadable (torchvision says: {err}); use `download` to fetch it, "
            "or point root= at a local copy"
        ) from None
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise LakdError(f"{source}: {err}") from None
    return TorchvisionDataset(source, dataset)
