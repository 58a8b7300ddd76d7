"""One string names any model: ``load_model(spec)`` -> (model, preprocess, tokenizer).

Spec forms (DESIGN.md "Model specs"), looked up in ``SCHEMES`` by prefix; anything else is a
checkpoint path, matched by suffix in :data:`lakd.models.safe_load.READERS`:

- ``lakd:NAME``                configs shipped in lakd (:func:`list_lakd_configs`), random init
- ``open_clip:ARCH[@TAG]``     an open_clip architecture, random init or a pretrained tag
- ``local-dir:PATH``, ``hf-hub:ORG/REPO``   passed to open_clip as is
- ``path/to/ckpt.pt`` / ``.safetensors``   a lakd checkpoint, or an open_clip one with ``arch``

Pretrained tags and ``hf-hub:`` download on the user's machine; with ``HF_HUB_OFFLINE=1`` and
nothing cached they fail with a :class:`LakdError` instead of reaching the network.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import huggingface_hub
import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from lakd.errors import LakdError
from lakd.models.build import (
    LAKD_CONFIG_PREFIX,
    check_precision,
    describe_known_archs,
    finish,
    first_line,
    list_lakd_configs,
    quiet_open_clip,
    tokenizer_for,
)
from lakd.models.checkpoint import load_checkpoint
from lakd.models.safe_load import READERS


@dataclass(frozen=True)
class LoadOptions:
    device: str = "cpu"
    arch: str | None = None
    precision: str = "fp32"


Resolver = Callable[[str, str, LoadOptions], tuple]
SCHEMES: dict[str, Resolver] = {}


def register_scheme(prefix: str) -> Callable[[Resolver], Resolver]:
    """Register ``resolver(rest, spec, options)`` for specs written ``prefix:rest``."""

    def deco(fn: Resolver) -> Resolver:
        SCHEMES[prefix] = fn
        return fn

    return deco


def accepted_forms() -> str:
    schemes = ", ".join(f"{prefix}:..." for prefix in SCHEMES)
    return f"{schemes}, or a checkpoint file ending in {', '.join(READERS)}"


def load_model(
    spec: str | os.PathLike,
    *,
    device: str = "cpu",
    arch: str | None = None,
    precision: str = "fp32",
    seed: int = 0,
):
    """Resolve a model spec -> (model in eval mode, eval preprocess, tokenizer).

    The model carries ``lakd_spec``, ``lakd_model_cfg`` (the open_clip config it was built from)
    and ``lakd_model_name`` (the open_clip config name, or None). ``arch`` applies to checkpoint
    files only (an open_clip checkpoint has no config of its own). Random-init weights
    (``lakd:NAME``, ``open_clip:ARCH`` without a tag) are drawn from torch's CPU generator seeded
    with ``seed``, so a spec names the same weights in every process, rank and rerun; the caller's
    random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _resolve(os.fspath(spec), device=device, arch=arch, precision=precision)


def _resolve(spec: str, *, device: str, arch: str | None, precision: str):
    check_precision(precision)
    options = LoadOptions(device=device, arch=arch, precision=precision)
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in SCHEMES:
        if arch is not None:
            raise LakdError(f"{spec}: --arch applies only to checkpoint files")
        return SCHEMES[prefix](rest, spec, options)
    if Path(spec).suffix.lower() in READERS:
        return load_checkpoint(spec, arch=arch, device=device, precision=precision)
    raise LakdError(f"{spec}: not a model spec (use {accepted_forms()})")


@register_scheme("lakd")
def _lakd_config(name: str, spec: str, options: LoadOptions):
    if name not in list_lakd_configs():
        raise LakdError(f"{spec}: unknown lakd config (available: {', '.join(list_lakd_configs())})")
    return _create_named(LAKD_CONFIG_PREFIX + name, spec, options)


@register_scheme("open_clip")
def _open_clip_arch(rest: str, spec: str, options: LoadOptions):
    arch, _, tag = rest.partition("@")
    arch = arch.replace("/", "-")
    if arch not in open_clip.list_models():
        raise LakdError(f"{spec}: unknown open_clip architecture {arch!r} ({describe_known_archs()})")
    if not tag:
        return _create_named(arch, spec, options)
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise LakdError(
            f"{spec}: unknown pretrained tag {tag!r} for {arch} (available: {', '.join(tags) or 'none'})"
        )
    if _offline() and not _tag_is_cached(tag_cfg):
        raise LakdError(
            f"{spec}: pretrained tag {tag!r} could not be fetched offline (HF_HUB_OFFLINE is set)"
        )
    return _create_named(arch, spec, options, pretrained=tag)


@register_scheme("hf-hub")
def _hf_hub(repo: str, spec: str, options: LoadOptions):
    if _offline() and not _is_cached(repo, "open_clip_config.json"):
        raise LakdError(f"{spec}: could not be fetched offline (HF_HUB_OFFLINE is set and it is not cached)")
    return _create_schema(spec, options)


@register_scheme("local-dir")
def _local_dir(path: str, spec: str, options: LoadOptions):
    folder = Path(path)
    if not folder.is_dir():
        raise LakdError(f"{spec}: no such folder")
    if not (folder / "open_clip_config.json").is_file():
        raise LakdError(f"{spec}: no open_clip_config.json in the folder")
    return _create_schema(spec, options)


def _create_named(name: str, spec: str, options: LoadOptions, *, pretrained: str | None = None):
    """An open_clip config name (+ optional pretrained tag) via open_clip.create_model."""
    with _open_clip_errors(spec), quiet_open_clip():
        model = open_clip.create_model(
            name, pretrained=pretrained, precision=options.precision, device=options.device
        )
    model_cfg = open_clip.get_model_config(name)
    tokenizer = tokenizer_for(model_cfg, name, source=spec)
    return finish(model, tokenizer, spec=spec, model_cfg=model_cfg, model_name=name)


def _create_schema(spec: str, options: LoadOptions):
    """``local-dir:`` / ``hf-hub:`` specs, handed to open_clip as they are."""
    with _open_clip_errors(spec), quiet_open_clip():
        model = open_clip.create_model(spec, precision=options.precision, device=options.device)
        model_cfg = open_clip.get_model_config(spec)
        tokenizer = open_clip.get_tokenizer(spec)
    return finish(model, tokenizer, spec=spec, model_cfg=model_cfg, model_name=None)


@contextlib.contextmanager
def _open_clip_errors(spec: str) -> Iterator[None]:
    """Turn open_clip's failures (download, bad config, weights) into one-line LakdErrors naming the spec."""
    try:
        yield
    except LakdError:
        raise
    except Exception as err:
        raise LakdError(f"{spec}: open_clip could not load it ({first_line(err)})") from err


def _offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return flag in {"1", "ON", "YES", "TRUE"} or huggingface_hub.constants.HF_HUB_OFFLINE


def _is_cached(repo_id: str, filename: str) -> bool:
    return isinstance(huggingface_hub.try_to_load_from_cache(repo_id, filename), str)


def _tag_is_cached(tag_cfg: dict) -> bool:
    """Whether the weights open_clip would download for a pretrained tag are already in the HF cache."""
    if tag_cfg.get("file"):
        return Path(tag_cfg["file"]).is_file()
    repo_id, filename = os.path.split(tag_cfg.get("hf_hub", ""))
    if not repo_id:
        return False
    filename = filename or HF_WEIGHTS_NAME
    candidates = {filename, HF_SAFE_WEIGHTS_NAME, str(PurePosixPath(filename).with_suffix(".safetensors"))}
    return any(_is_cached(repo_id, name) for name in candidates)
