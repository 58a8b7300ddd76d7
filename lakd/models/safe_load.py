"""Read checkpoint files without executing pickled code, and load their weights with clear errors.

``.pt`` / ``.pth`` / ``.bin`` go through ``torch.load(weights_only=True)``; ``.safetensors`` through
safetensors, with lakd's metadata in a JSON sidecar ``<file>.safetensors.json``. Every problem
with a file is a one-line :class:`LakdError` naming the file.
"""

from __future__ import annotations

import json
import pickle
import pickletools
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from open_clip.model import convert_to_custom_text_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file

from lakd.errors import LakdError
from lakd.io import file_sha256
from lakd.models.build import first_line

StateDict = dict[str, torch.Tensor]
Reader = Callable[[Path], tuple[StateDict, dict[str, Any]]]
READERS: dict[str, Reader] = {}


def register_reader(*suffixes: str) -> Callable[[Reader], Reader]:
    """Register ``reader(path) -> (state_dict, metadata)`` for files ending in ``suffixes``."""

    def deco(fn: Reader) -> Reader:
        for suffix in suffixes:
            READERS[suffix] = fn
        return fn

    return deco


def sidecar_path(path: str | Path) -> Path:
    """The JSON metadata file beside a ``.safetensors`` checkpoint: ``ckpt.safetensors`` -> ``ckpt.safetensors.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_checkpoint(path: str | Path) -> tuple[StateDict, dict[str, Any]]:
    """Read a checkpoint file -> (state_dict, metadata such as ``model_cfg``, ``epoch``, ``lakd``)."""
    path = Path(path)
    if not path.exists():
        raise LakdError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise LakdError(
            f"{path}: is a directory, not a checkpoint file (an exported folder loads as local-dir:{path})"
        )
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise LakdError(
            f"{path}: unknown checkpoint type {path.suffix!r} (expected one of {', '.join(READERS)})"
        )
    return reader(path)


@register_reader(".pt", ".pth", ".bin")
def read_torch(path: Path) -> tuple[StateDict, dict[str, Any]]:
    """A torch file holding ``{"state_dict": ..., ...}`` (open_clip / lakd layout) or a bare state dict."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing them
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        code = _refused_global(err, path)
        if code:
            raise LakdError(
                f"{path}: refused: unsafe pickled code ({code}); lakd loads checkpoints with "
                "weights_only=True and never runs code from a file. Convert it to safetensors where you trust it"
            ) from None
        raise LakdError(f"{path}: not a readable PyTorch checkpoint (corrupt or not a torch file)") from None
    except EOFError:
        raise LakdError(f"{path}: empty or truncated PyTorch checkpoint") from None
    except Exception as err:  # any parser failure on untrusted bytes means a damaged file
        raise LakdError(f"{path}: truncated or corrupt PyTorch checkpoint ({first_line(err)})") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        meta = {key: value for key, value in obj.items() if key != "state_dict"}
        return _checked_state_dict(obj["state_dict"], path), meta
    if isinstance(obj, dict) and obj:
        return _checked_state_dict(obj, path), {}
    raise LakdError(f"{path}: holds a {type(obj).__name__}, not a state_dict")


@register_reader(".safetensors")
def read_safetensors(path: Path) -> tuple[StateDict, dict[str, Any]]:
    """Tensors from safetensors plus metadata from the sidecar JSON (empty when there is none)."""
    try:
        state_dict = load_file(path, device="cpu")
    except SafetensorError as err:
        raise LakdError(f"{path}: truncated or corrupt safetensors file ({first_line(err)})") from None
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return state_dict, {}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LakdError(f"{sidecar}: not valid JSON ({first_line(err)})") from None
    if not isinstance(meta, dict):
        raise LakdError(f"{sidecar}: expected a JSON object with model_cfg and lakd metadata")
    digest = (meta.get("lakd") or {}).get("weights_sha256") if isinstance(meta.get("lakd"), dict) else None
    if digest is not None and digest != file_sha256(path):
        raise LakdError(f"{path}: weights do not match {sidecar.name} (file replaced or half-written)")
    return state_dict, meta


def _checked_state_dict(state_dict: Any, path: Path) -> StateDict:
    if not isinstance(state_dict, dict) or not state_dict:
        raise LakdError(f"{path}: state_dict is not a non-empty dict of tensors")
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise LakdError(f"{path}: state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
    if all(str(key).startswith("module.") for key in state_dict):  # saved from a DDP-wrapped model
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    return state_dict


def _refused_global(err: Exception, path: Path) -> str | None:
    """Name the code a refused pickle wanted to call: from torch's message, else by scanning its opcodes."""
    match = re.search(r"GLOBAL ([\w.]+)", str(err))
    if match:
        return match.group(1)
    globals_ = pickled_globals(path)
    return globals_[0] if globals_ else None


def pickled_globals(path: Path) -> list[str]:
    """Globals (``module.name``) referenced by the first pickle in ``path``, read without executing it."""
    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for opcode, arg, _pos in pickletools.genops(f):
                if opcode.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not a pickle (random bytes, zip archive): stop at the first unreadable opcode
        pass
    return names


def load_weights(
    model: torch.nn.Module, state_dict: StateDict, *, source: Path | str, arch: str | None
) -> None:
    """Load ``state_dict`` into ``model`` strictly; mismatches raise one-line errors naming ``source``."""
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)  # older open_clip text layout
    if "logit_scale" in state_dict and state_dict["logit_scale"].ndim != model.logit_scale.ndim:
        state_dict = {**state_dict, "logit_scale": state_dict["logit_scale"].reshape(model.logit_scale.shape)}
    target = arch or "the model"
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key in state_dict and state_dict[key].shape != tensor.shape:
            raise LakdError(
                f"{source}: wrong architecture: {key} has shape {tuple(state_dict[key].shape)} "
                f"in the file but {tuple(tensor.shape)} in {target}"
            )
    missing = [key for key in expected if key not in state_dict]
    if missing:
        raise LakdError(
            f"{source}: {len(missing)} of {len(expected)} keys of {target} missing from the file "
            f"(first: {', '.join(missing[:3])})"
        )
    unexpected = [key for key in state_dict if key not in expected]
    if unexpected:
        raise LakdError(
            f"{source}: {len(unexpected)} keys in the file that {target} does not have "
            f"(first: {', '.join(unexpected[:3])})"
        )
    model.load_state_dict(state_dict, strict=True)
