"""Data: the shapes world, readers for real data (CSV, COCO, image folder, webdataset,
torchvision) behind one spec string, and the embedding store."""

from lakd.data.base import Item, Skipped, SourceOptions, describe_skipped, drop_skipped
from lakd.data.sources import open_source

__all__ = ["Item", "Skipped", "SourceOptions", "describe_skipped", "drop_skipped", "open_source"]
