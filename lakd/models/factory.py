"""Model specs -> models: ``load_model(spec)`` -> (model, preprocess, tokenizer) through open_clip.

The spec is parsed by :meth:`lakd.models.specs.ModelSpec.parse` (every form is listed there); each
scheme has one resolver in ``_RESOLVERS``, and checkpoint files are read by
:mod:`lakd.models.checkpoint` without unpickling code. Pretrained tags and ``hf-hub:`` download on
the user's machine; with ``HF_HUB_OFFLINE=1`` and nothing cached they fail with a
:class:`LakdError` instead of reaching the network.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import huggingface_hub
import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from lakd.errors import LakdError
from lakd.models.build import (
    check_precision,
    describe_known_archs,
    finish,
    first_line,
    quiet_open_clip,
    register_lakd_configs,
    tokenizer_for,
)
from lakd.models.checkpoint import load_checkpoint
from lakd.models.specs import SCHEMES, ModelSpec


@dataclass(frozen=True)
class LoadOptions:
    device: str = "cpu"
    arch: str | None = None
    precision: str = "fp32"


Resolver = Callable[[ModelSpec, LoadOptions], tuple]


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


def _resolve(text: str, *, device: str, arch: str | None, precision: str):
    check_precision(precision)
    register_lakd_configs()
    spec = ModelSpec.parse(text)
    if spec.is_file:
        return load_checkpoint(spec.target, arch=arch, device=device, precision=precision)
    if arch is not None:
        raise LakdError(f"{spec}: `arch` applies only to checkpoint files")
    return _RESOLVERS[spec.scheme](spec, LoadOptions(device=device, arch=arch, precision=precision))


def _lakd_config(spec: ModelSpec, options: LoadOptions):
    spec.check()
    return _create_named(spec.config_name, str(spec), options)


def _open_clip_arch(spec: ModelSpec, options: LoadOptions):
    arch, tag = spec.target, spec.tag
    if arch not in open_clip.list_models():
        raise LakdError(f"{spec}: unknown open_clip architecture {arch!r} ({describe_known_archs()})")
    if not tag:
        return _create_named(arch, str(spec), options)
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise LakdError(
            f"{spec}: unknown pretrained tag {tag!r} for {arch} (available: {', '.join(tags) or 'none'})"
        )
    if not _tag_is_cached(tag_cfg):
        if _offline():
            raise LakdError(
                f"{spec}: pretrained tag {tag!r} could not be fetched offline (HF_HUB_OFFLINE is set)"
            )
        _check_reachable(spec, _download_url(tag_cfg))
    return _create_named(arch, str(spec), options, pretrained=tag)


def _hf_hub(spec: ModelSpec, options: LoadOptions):
    if not _is_cached(spec.target, "open_clip_config.json"):
        if _offline():
            raise LakdError(f"{spec}: could not be fetched offline (HF_HUB_OFFLINE is set and it is not cached)")
        _check_reachable(spec, huggingface_hub.constants.ENDPOINT)
    return _create_schema(str(spec), options)


REACH_TIMEOUT_S = 5.0


def _download_url(tag_cfg: dict) -> str:
    """Where open_clip fetches a pretrained tag's weights from: the Hugging Face Hub when the tag has
    a hub entry (open_clip prefers it), else the tag's own URL."""
    if tag_cfg.get("hf_hub") or not tag_cfg.get("url"):
        return huggingface_hub.constants.ENDPOINT
    return tag_cfg["url"]


def _check_reachable(spec: ModelSpec, url: str) -> None:
    """Before a download: one connection to ``url``'s host (at most :data:`REACH_TIMEOUT_S`), so a
    machine without network gets one line at once instead of the hub client's retries (five, with
    back-off, each logged). Skipped behind a proxy, which only the download itself goes through."""
    if urllib.request.getproxies():
        return
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)
    if not host:
        return
    try:
        socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
    except OSError as err:
        raise LakdError(
            f"{spec}: not in the local cache, and {host} cannot be reached to download it "
            f"({err.strerror or err}); connect to the network, or copy the Hugging Face cache of a "
            "machine that has it (HF_HOME)"
        ) from None


def _local_dir(spec: ModelSpec, options: LoadOptions):
    spec.check()
    if not (Path(spec.target) / "open_clip_config.json").is_file():
        raise LakdError(f"{spec}: no open_clip_config.json in the folder")
    return _create_schema(str(spec), options)


# one resolver per scheme of lakd.models.specs.SCHEMES (checkpoint files go to load_checkpoint)
_RESOLVERS: dict[str, Resolver] = {
    "lakd": _lakd_config,
    "open_clip": _open_clip_arch,
    "local-dir": _local_dir,
    "hf-hub": _hf_hub,
}
assert set(_RESOLVERS) == set(SCHEMES), "every model scheme needs exactly one resolver"


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
