"""Save, load and export lakd checkpoints.

A ``.pt`` checkpoint keeps open_clip's layout so open_clip loads it too::

    {"state_dict": {...}, "epoch": int, "name": open_clip config name or None,
     "model_cfg": {...}, "lakd": {"version", "model_name", "spec", "preprocess_cfg", **extra}}

and holds only weights_only-safe types (tensors, dicts, lists, str, numbers, None). A
``.safetensors`` checkpoint holds the tensors; everything else (the same keys as above) goes to the
JSON sidecar ``<file>.safetensors.json``. :func:`export_local_dir` writes an open_clip ``local-dir``
folder (``open_clip_config.json`` + ``open_clip_model.safetensors``).

Extra parts: a wrapper around the open_clip model (the distillation student with its projection
heads, :class:`lakd.distill.StudentWithHeads`) may own modules that are not the model's. It
provides ``checkpoint_parts() -> (bare model, {name: (JSON metadata, state_dict)})``; the
checkpoint's ``state_dict`` stays the bare model's (open_clip loads it strictly), each part's
metadata goes to ``lakd[name]`` (``lakd["parts"]`` lists the names) and its tensors to ``<name>_state_dict`` in a ``.pt`` file, or to
the file ``<stem>.<name>.safetensors`` beside a ``.safetensors`` one (named in ``lakd[name]["file"]``).
:func:`load_checkpoint` ignores the parts; :func:`load_checkpoint_with_parts` returns them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import save_file

import lakd
from lakd.errors import LakdError
from lakd.io import atomic_dir, atomic_path, atomic_paths, file_sha256, write_json, writing
from lakd.models.build import finish, model_from_cfg, resolve_arch, set_preprocess_cfg, tokenizer_for
from lakd.models.safe_load import StateDict, load_weights, read_checkpoint, sidecar_path


class MissingArch(LakdError):
    """A checkpoint without its model config (an open_clip checkpoint), read without ``arch``. Its
    message asks for the ``arch`` field; a caller with no way to give one (a teacher, a report entry)
    catches it and says what to do instead (:meth:`advice`)."""

    def __init__(self, path: str | Path, advice: str | None = None):
        self.path = Path(path)
        super().__init__(
            f"{path}: no model_cfg in the checkpoint (an open_clip checkpoint?): "
            + (advice or "give `arch` (an open_clip architecture such as ViT-B-32, or lakd:NAME)")
        )

    def advice(self, advice: str) -> MissingArch:
        """The same problem with other advice."""
        return MissingArch(self.path, advice)

Parts = dict[str, tuple[dict[str, Any], StateDict]]
Writer = Callable[..., None]  # (path, state_dict, record, parts, *, durable) -> None
WRITERS: dict[str, Writer] = {}
LOCAL_DIR_CONFIG = "open_clip_config.json"
LOCAL_DIR_WEIGHTS = "open_clip_model.safetensors"


def register_writer(suffix: str) -> Callable[[Writer], Writer]:
    """Register ``writer(path, state_dict, record, parts)`` for checkpoints ending in ``suffix``."""

    def deco(fn: Writer) -> Writer:
        WRITERS[suffix] = fn
        return fn

    return deco


def save_checkpoint(
    model: torch.nn.Module,
    path: str | Path,
    *,
    epoch: int = 0,
    extra: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    durable: bool = False,
) -> Path:
    """Write ``model`` (made by :func:`lakd.models.load_model`, or a wrapper with extra parts, see
    the module docstring) to ``path`` (``.pt`` or ``.safetensors``), atomically.

    ``extra`` (JSON-serialisable) is merged into the ``lakd`` metadata; it may not reuse lakd's own keys.
    ``state``: further top-level entries of a ``.pt`` file (weights_only-safe types: tensors, dicts,
    lists, numbers, strings), e.g. a trainer's ``training_state``; loaders of the model ignore them.
    ``durable``: fsync the file and its folder, so the checkpoint survives a power cut once written.
    """
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise LakdError(f"{path}: checkpoint must end in one of {', '.join(WRITERS)}")
    if state and path.suffix.lower() != ".pt":
        raise LakdError(f"{path}: training state is saved in .pt checkpoints only")
    model, parts = split_parts(model)
    record = _checkpoint_record(model, epoch=epoch, extra=extra or {}, parts=parts)
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    part_tensors = {
        name: {key: value.detach().cpu() for key, value in tensors.items()}
        for name, (_, tensors) in parts.items()
    }
    if state:
        clash = sorted(set(state) & {"state_dict", *record, *(f"{name}_state_dict" for name in part_tensors)})
        if clash:
            raise LakdError(f"state: key {clash[0]!r} is reserved for the checkpoint's own entries")
        record = {**record, **state}
    writer(path, state_dict, record, part_tensors, durable=durable)
    return path


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def split_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, Parts]:
    """(bare open_clip model, extra parts) of ``model``, unwrapping DDP / DataParallel / torch.compile first."""
    model = unwrap(model)
    checkpoint_parts = getattr(model, "checkpoint_parts", None)
    return checkpoint_parts() if callable(checkpoint_parts) else (model, {})


def part_file(path: Path, name: str) -> Path:
    """``ckpt.safetensors`` -> ``ckpt.<name>.safetensors``: the tensors of part ``name``."""
    return path.with_name(f"{path.stem}.{name}{path.suffix}")


@register_writer(".pt")
def _write_torch(
    path: Path, state_dict: StateDict, record: dict[str, Any], parts: dict[str, StateDict], *, durable: bool
) -> None:
    tensors = {f"{name}_state_dict": part for name, part in parts.items()}
    with atomic_path(path, durable=durable) as tmp, writing(tmp), open(tmp, "wb") as f:
        file = _KeepWriteError(f)
        try:
            torch.save({"state_dict": state_dict, **tensors, **record}, file)
        except RuntimeError:
            if file.error is not None:  # torch reports a failed write as a RuntimeError of its own
                raise file.error from None
            raise


class _KeepWriteError:
    """A binary file for ``torch.save`` that keeps the OSError of a write that failed (a full disk):
    torch turns it into a RuntimeError ("unexpected pos ...") that says nothing of the disk."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.file.flush()


@register_writer(".safetensors")
def _write_safetensors(
    path: Path, state_dict: StateDict, record: dict[str, Any], parts: dict[str, StateDict], *, durable: bool
) -> None:
    files = [part_file(path, name) for name in parts]
    # every file is written under a temporary name before any is renamed, so a full disk leaves the
    # previous checkpoint whole; the renames put the sidecar last. The sidecar records the weights'
    # digest: a crash between the renames, or weights replaced later, is detected on load instead of
    # pairing new weights with old metadata
    with atomic_paths(*files, path, sidecar_path(path), durable=durable) as tmps:
        for (name, part), file, tmp in zip(parts.items(), files, tmps, strict=False):
            _save_weights(tmp, part)
            record["lakd"][name]["file"] = file.name
        record["lakd"]["weights_sha256"] = _save_weights(tmps[len(files)], state_dict)
        with writing(tmps[-1]):
            tmps[-1].write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _save_weights(path: Path, state_dict: StateDict) -> str:
    """Write the tensors to ``path`` (a temporary name); return the SHA-256 of the file."""
    tensors = {
        key: value.contiguous().clone() for key, value in state_dict.items()
    }  # clone: no shared storage
    with writing(path):
        save_file(tensors, str(path), metadata={"format": "pt"})
    return file_sha256(path)


def _write_safetensors_weights(path: Path, state_dict: StateDict, *, durable: bool = False) -> str:
    """Write the tensors atomically; return the SHA-256 of the file."""
    with atomic_path(path, durable=durable) as tmp:
        return _save_weights(tmp, state_dict)


def _checkpoint_record(
    model: torch.nn.Module, *, epoch: int, extra: dict[str, Any], parts: Parts | None = None
) -> dict[str, Any]:
    """Everything but the weights: open_clip's keys plus lakd's metadata, as JSON-safe plain data."""
    model_cfg = getattr(model, "lakd_model_cfg", None)
    if model_cfg is None:
        raise LakdError("model has no lakd_model_cfg: create it with lakd.models.load_model to save it")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise LakdError(f"epoch: must be an int, got {epoch!r}")
    core = {
        "version": lakd.__version__,
        "model_name": getattr(model, "lakd_model_name", None),
        "spec": getattr(model, "lakd_spec", None),
        "preprocess_cfg": open_clip.get_model_preprocess_cfg(model),
    }
    if parts:
        core.update({"parts": sorted(parts), **{name: dict(meta) for name, (meta, _) in parts.items()}})
    clash = sorted(set(extra) & set(core))
    if clash:
        raise LakdError(f"extra: key {clash[0]!r} is reserved for lakd's own checkpoint metadata")
    record = {"epoch": epoch, "name": core["model_name"], "model_cfg": model_cfg, "lakd": {**core, **extra}}
    try:  # a JSON round trip keeps only plain types: safe for weights_only and identical in both formats
        return json.loads(json.dumps(record))
    except (TypeError, ValueError) as err:
        raise LakdError(f"extra: checkpoint metadata must be JSON-serialisable ({err})") from None


def load_checkpoint(
    path: str | Path, *, arch: str | None = None, device: str = "cpu", precision: str = "fp32"
):
    """Load a checkpoint file -> (model, preprocess, tokenizer), like :func:`lakd.models.load_model`.

    A lakd checkpoint carries its config; an open_clip checkpoint (no ``model_cfg``) needs ``arch``
    (an open_clip config name or ``lakd:NAME``), which also overrides a stored config when given.
    The file's metadata (everything but weights, optimizer and training state) is attached as
    ``model.lakd_checkpoint_meta``. Extra parts (module docstring) are not read.
    """
    return _load_checkpoint(Path(path), arch=arch, device=device, precision=precision)[0]


def load_checkpoint_with_parts(
    path: str | Path, *, arch: str | None = None, device: str = "cpu", precision: str = "fp32"
):
    """:func:`load_checkpoint` plus the checkpoint's extra parts -> (model, preprocess, tokenizer, parts)
    with ``parts = {name: (metadata, state_dict on the CPU)}`` (empty when there are none)."""
    path = Path(path)
    loaded, meta = _load_checkpoint(path, arch=arch, device=device, precision=precision)
    return (*loaded, _read_parts(path, meta))


def _load_checkpoint(path: Path, *, arch: str | None, device: str, precision: str):
    """((model, preprocess, tokenizer), the file's metadata)."""
    state_dict, meta = read_checkpoint(path)
    lakd_meta = meta.get("lakd") if isinstance(meta.get("lakd"), dict) else {}
    if arch is not None:
        model_name, model_cfg = resolve_arch(arch)
    elif meta.get("model_cfg") is not None:
        model_name, model_cfg = lakd_meta.get("model_name"), meta["model_cfg"]
    else:
        raise MissingArch(path)
    model = model_from_cfg(model_cfg, precision=precision, device=device, source=str(path))
    load_weights(model, state_dict, source=path, arch=model_name)
    preprocess_cfg = lakd_meta.get("preprocess_cfg")
    set_preprocess_cfg(model, preprocess_cfg if isinstance(preprocess_cfg, dict) else {})
    part_keys = {f"{name}_state_dict" for name in lakd_meta.get("parts") or [] if isinstance(name, str)}
    model.lakd_checkpoint_meta = {
        key: value
        for key, value in meta.items()
        if key not in ("optimizer", "training_state") and key not in part_keys
    }
    tokenizer = tokenizer_for(model_cfg, model_name, source=str(path))
    return finish(model, tokenizer, spec=str(path), model_cfg=model_cfg, model_name=model_name), meta


def _read_parts(path: Path, meta: dict[str, Any]) -> Parts:
    """The extra parts listed in ``lakd.parts``: tensors from ``<name>_state_dict`` (.pt) or their own file."""
    lakd_meta = meta.get("lakd") if isinstance(meta.get("lakd"), dict) else {}
    parts: Parts = {}
    for name in lakd_meta.get("parts") or []:
        part_meta = lakd_meta.get(name) if isinstance(name, str) else None
        if not isinstance(part_meta, dict):
            raise LakdError(f"{path}: extra part {name!r} has no metadata lakd.{name}")
        part_meta = dict(part_meta)
        if f"{name}_state_dict" in meta:
            tensors = meta[f"{name}_state_dict"]
            if not isinstance(tensors, dict) or not all(
                isinstance(t, torch.Tensor) for t in tensors.values()
            ):
                raise LakdError(f"{path}: {name}_state_dict is not a dict of tensors")
        else:
            file = part_meta.pop("file", None)
            if not isinstance(file, str) or Path(file).name != file or not file:
                raise LakdError(
                    f"{path}: extra part {name!r} names no file beside {path.name} (lakd.{name}.file)"
                )
            tensors, _ = read_checkpoint(path.with_name(file))
        parts[name] = (part_meta, tensors)
    return parts


def export_local_dir(model: torch.nn.Module, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write an open_clip ``local-dir`` folder that ``open_clip.create_model_and_transforms("local-dir:DIR")`` loads.

    Contents: ``open_clip_config.json`` (``model_cfg``, ``preprocess_cfg`` and lakd provenance) and
    ``open_clip_model.safetensors``. The folder appears complete or not at all.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise LakdError(f"{out_dir}: already exists (use `overwrite` to replace it)")
    model, _ = split_parts(model)  # the bare model: a wrapper's extra parts are dropped
    record = _checkpoint_record(model, epoch=0, extra={})
    config = {
        "model_cfg": record["model_cfg"],
        "preprocess_cfg": record["lakd"]["preprocess_cfg"],
        "lakd": record["lakd"],
    }
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        _write_safetensors_weights(tmp / LOCAL_DIR_WEIGHTS, state_dict)
        write_json(tmp / LOCAL_DIR_CONFIG, config)
    return out_dir
