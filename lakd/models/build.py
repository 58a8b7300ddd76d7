"""Build open_clip models, tokenizers and eval transforms; register lakd's shipped configs.

Shipped configs live in ``configs/lakd-NAME.json``; lakd names them ``lakd:NAME``.
:func:`register_lakd_configs` registers them with open_clip under ``lakd-NAME`` (so
``open_clip.create_model_and_transforms("lakd-tiny-vit")`` works); every lakd function that builds
a model or reads a checkpoint calls it first.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import open_clip
import torch
from open_clip.factory import _set_model_device_and_precision
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

from lakd.errors import LakdError
from lakd.models.specs import CONFIG_DIR, LAKD_CONFIG_PREFIX, ModelSpec, list_lakd_configs, scheme_of

# Precisions open_clip's create_model understands for inference ("amp" variants are a training concern).
PRECISIONS = ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16")


def register_lakd_configs() -> None:
    """Register the shipped configs with open_clip as ``lakd-NAME`` (idempotent)."""
    names = {LAKD_CONFIG_PREFIX + name for name in list_lakd_configs()}
    if not names <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception message (library messages can span paragraphs)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise LakdError(f"precision {precision!r}: unknown (use one of {', '.join(PRECISIONS)})")


@contextlib.contextmanager
def quiet_open_clip() -> Iterator[None]:
    """Hide open_clip's info/warning chatter (e.g. "initialized randomly") while it builds a model."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "open_clip" not in record.pathname

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def resolve_arch(arch: str) -> tuple[str, dict[str, Any]]:
    """``"lakd:tiny-vit"`` / ``"open_clip:ViT-B-32"`` / ``"ViT-B-32"`` -> (open_clip config name, config)."""
    register_lakd_configs()
    name = ModelSpec.parse(arch).config_name if scheme_of(arch) else None
    name = (name or arch).replace("/", "-")
    cfg = open_clip.get_model_config(name) if name in open_clip.list_models() else None
    if cfg is None:
        raise LakdError(f"architecture {arch!r}: unknown ({describe_known_archs()})")
    return name, cfg


def describe_known_archs() -> str:
    """One-line hint naming lakd's configs and a few of open_clip's."""
    lakd_names = ", ".join(f"lakd:{n}" for n in list_lakd_configs())
    builtin = [n for n in open_clip.list_models() if not n.startswith(LAKD_CONFIG_PREFIX)]
    examples = ", ".join(n for n in ("RN50", "ViT-B-32", "ViT-B-16", "ViT-L-14") if n in builtin)
    return f"lakd configs: {lakd_names}; open_clip has {len(builtin)} more, e.g. {examples} (open_clip.list_models())"


def model_from_cfg(
    model_cfg: dict[str, Any], *, precision: str = "fp32", device: str = "cpu", source: str = "model_cfg"
) -> torch.nn.Module:
    """Instantiate an untrained open_clip model from a config dict, as ``open_clip.create_model`` does.

    Used for self-describing checkpoints whose config may not be registered with open_clip. Tower
    weights (timm / Hugging Face) are never downloaded: the checkpoint supplies every weight.
    """
    check_precision(precision)
    if not isinstance(model_cfg, dict) or not all(
        isinstance(model_cfg.get(key), dict) for key in ("vision_cfg", "text_cfg")
    ):
        raise LakdError(f"{source}: model_cfg must be a dict with vision_cfg and text_cfg dicts")
    cfg = copy.deepcopy(model_cfg)
    vision_cfg, text_cfg = cfg["vision_cfg"], cfg["text_cfg"]
    is_timm = "timm_model_name" in vision_cfg
    if is_timm:
        vision_cfg["timm_model_pretrained"] = False
    if "hf_model_name" in text_cfg:
        text_cfg["hf_model_pretrained"] = False
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in text_cfg
    if custom_text:
        model_class = open_clip.CoCa if "multimodal_cfg" in cfg else open_clip.CustomTextCLIP
    else:
        model_class = open_clip.CLIP
    try:
        with quiet_open_clip():
            model = model_class(**cfg, cast_dtype=open_clip.get_cast_dtype(precision))
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as err:
        raise LakdError(
            f"{source}: model_cfg does not describe an open_clip model ({first_line(err)})"
        ) from err
    # The same device/precision handling open_clip.create_model applies.
    _set_model_device_and_precision(model, torch.device(device), precision, is_timm)
    set_preprocess_cfg(model, {})
    return model


def set_preprocess_cfg(model: torch.nn.Module, overrides: dict[str, Any]) -> None:
    """Give ``model`` open_clip's default preprocess config for its image size, updated by ``overrides``."""
    cfg = dataclasses.asdict(PreprocessCfg()) | {"size": model.visual.image_size}
    cfg = merge_preprocess_dict(cfg, overrides or {})
    open_clip.set_model_preprocess_cfg(model, cfg)


def tokenizer_for(model_cfg: dict[str, Any], model_name: str | None, *, source: str = "model"):
    """The tokenizer for a model config: open_clip's own choice for a registered name, else from text_cfg.

    A Hugging Face tokenizer that cannot be had (``transformers`` not installed, or offline without
    a cached copy) is a one-line LakdError naming ``source``.
    """
    try:
        return _tokenizer_for(model_cfg, model_name)
    except (ImportError, OSError, ValueError) as err:
        name = model_cfg.get("text_cfg", {}).get("hf_tokenizer_name") or model_name
        hint = (
            "install the Hugging Face `transformers` package"
            if isinstance(err, ImportError)
            else "it could not be loaded (offline without a cached copy?)"
        )
        raise LakdError(f"{source}: tokenizer {name!r}: {hint} ({first_line(err)})") from None


def _tokenizer_for(model_cfg: dict[str, Any], model_name: str | None):
    register_lakd_configs()
    text_cfg = model_cfg.get("text_cfg", {})
    context_length = text_cfg.get("context_length", open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH)
    if model_name and model_name in open_clip.list_models():
        return open_clip.get_tokenizer(model_name, context_length=context_length)
    kwargs = text_cfg.get("tokenizer_kwargs") or {}
    if text_cfg.get("hf_tokenizer_name"):
        return HFTokenizer(
            text_cfg["hf_tokenizer_name"],
            context_length=context_length,
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **kwargs,
        )
    return SimpleTokenizer(context_length=context_length, **kwargs)


def finish(
    model: torch.nn.Module, tokenizer, *, spec: str, model_cfg: dict[str, Any], model_name: str | None
):
    """Put ``model`` in eval mode, attach lakd's provenance attributes, return (model, preprocess, tokenizer)."""
    model.eval()
    model.lakd_spec = spec
    model.lakd_model_cfg = copy.deepcopy(model_cfg)
    model.lakd_model_name = model_name
    preprocess = image_transform_v2(
        PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=False
    )
    return model, preprocess, tokenizer
