"""Readers for real data, named in :data:`lakd.data.sources.SOURCE_KINDS` (spec forms and options there).

| spec | module |
|---|---|
| ``captions.csv`` / ``.tsv`` (open_clip convention) | :mod:`~lakd.data.readers.csvfile` |
| ``captions_val2017.json`` (COCO captions) | :mod:`~lakd.data.readers.coco` |
| a folder with one subfolder of images per class | :mod:`~lakd.data.readers.imagefolder` |
| ``wds:shards/train-{000..009}.tar`` (webdataset tar shards) | :mod:`~lakd.data.readers.wds` |
| ``tv:CIFAR10?root=DIR`` (torchvision data sets by name) | :mod:`~lakd.data.readers.tv` |

Every reader returns a map-style dataset whose ``__getitem__`` gives an :class:`~lakd.data.base.Item`,
or a :class:`~lakd.data.base.Skipped` when that item's image cannot be used. Images are decoded lazily.
"""

from lakd.data.readers import coco, csvfile, imagefolder, tv, wds
from lakd.data.readers.common import FileImageDataset, UnreadableImage, decode_image, load_image_file

__all__ = [
    "FileImageDataset",
    "UnreadableImage",
    "coco",
    "csvfile",
    "decode_image",
    "imagefolder",
    "load_image_file",
    "tv",
    "wds",
]
