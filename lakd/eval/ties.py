"""The tie rule of every ranked score in lakd, shared with the alignment metrics of
:mod:`lakd.analysis` (defined in :mod:`lakd.analysis.ties`): a tie never counts for a model."""

from lakd.analysis.ties import NO_PICK, agreement, pessimistic_rank, text_keys, unique_top1

__all__ = ["NO_PICK", "agreement", "pessimistic_rank", "text_keys", "unique_top1"]
