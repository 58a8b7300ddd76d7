"""One string names any model; :meth:`ModelSpec.parse` is the one parser of every form.

| form | scheme | target | tag |
|---|---|---|---|
| ``lakd:NAME`` | ``lakd`` | a config shipped in lakd (:func:`list_lakd_configs`), random init | None |
| ``open_clip:ARCH[@TAG]`` | ``open_clip`` | an open_clip architecture (``/`` read as ``-``) | pretrained tag or None |
| ``local-dir:PATH`` | ``local-dir`` | a folder written by open_clip / :func:`lakd.models.export_local_dir` | None |
| ``hf-hub:ORG/REPO`` | ``hf-hub`` | a Hugging Face Hub repository | None |
| ``path/ckpt.pt`` (``.pth``, ``.bin``, ``.safetensors``) | ``file`` | the checkpoint file | None |

Parsing reads no file and imports nothing heavy (no torch, no open_clip), so commands check every
spec they are given before any model loads; :mod:`lakd.models.factory` turns a spec into a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lakd.errors import LakdError

CONFIG_DIR = Path(__file__).parent / "configs"
LAKD_CONFIG_PREFIX = "lakd-"  # shipped configs are registered with open_clip as lakd-NAME
SCHEMES = ("lakd", "open_clip", "local-dir", "hf-hub")
FILE = "file"
# checkpoint suffixes, each read by lakd.models.safe_load without unpickling code
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def list_lakd_configs() -> list[str]:
    """Names of the configs shipped inside lakd, usable as ``lakd:NAME`` (e.g. ``"tiny-vit"``)."""
    return sorted(p.stem[len(LAKD_CONFIG_PREFIX) :] for p in CONFIG_DIR.glob(f"{LAKD_CONFIG_PREFIX}*.json"))


def accepted_forms() -> str:
    """The spec forms, for error messages."""
    schemes = ", ".join(f"{scheme}:..." for scheme in SCHEMES)
    return f"{schemes}, or a checkpoint file ending in {', '.join(CHECKPOINT_SUFFIXES)}"


def scheme_of(text: str) -> str | None:
    """The scheme of ``text`` when it starts with a known ``scheme:``, else None."""
    prefix, sep, _ = text.partition(":")
    return prefix if sep and prefix in SCHEMES else None


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec (table in the module docstring); ``text`` is the spec as given."""

    text: str
    scheme: str
    target: str
    tag: str | None = None

    @classmethod
    def parse(cls, text: str | os.PathLike) -> ModelSpec:
        """Parse any spec form; a string that is none of them is a one-line LakdError."""
        text = os.fspath(text)
        scheme = scheme_of(text)
        if scheme is not None:
            rest = text[len(scheme) + 1 :]
            if not rest:
                raise LakdError(f"{text}: names no {scheme} model after '{scheme}:'")
            if scheme == "open_clip":
                arch, _, tag = rest.partition("@")
                return cls(text, scheme, arch.replace("/", "-"), tag or None)
            return cls(text, scheme, rest)
        if Path(text).suffix.lower() in CHECKPOINT_SUFFIXES:
            return cls(text, FILE, text)
        raise LakdError(f"{text}: not a model spec (use {accepted_forms()})")

    def __str__(self) -> str:
        return self.text

    @property
    def is_file(self) -> bool:
        """Whether the spec is a checkpoint file."""
        return self.scheme == FILE

    @property
    def random_init(self) -> bool:
        """Whether the weights are drawn at random (``lakd:NAME``, ``open_clip:ARCH`` without a tag)."""
        return self.scheme == "lakd" or (self.scheme == "open_clip" and self.tag is None)

    @property
    def config_name(self) -> str | None:
        """The open_clip config name of ``lakd:`` and ``open_clip:`` specs (None for the others)."""
        if self.scheme == "lakd":
            return LAKD_CONFIG_PREFIX + self.target
        return self.target if self.scheme == "open_clip" else None

    @property
    def display_name(self) -> str:
        """A short name for tables and legends: a file's stem, a folder's or repository's last part,
        a config name, or ``ARCH@TAG``."""
        if self.is_file:
            return Path(self.target).stem or self.text
        if self.scheme == "open_clip":
            return self.target + (f"@{self.tag}" if self.tag else "")
        return self.target.rstrip("/").rsplit("/", 1)[-1] or self.text

    def files(self) -> list[Path]:
        """The existing files the model is read from: a checkpoint with its sidecar, or a local-dir
        folder's files (empty for configs and hub repositories). Their change changes the model."""
        if self.scheme == "local-dir":
            folder = Path(self.target)
            return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        if self.is_file:
            path = Path(self.target)
            return [p for p in (path, path.with_name(path.name + ".json")) if p.is_file()]
        return []

    def fingerprint(self) -> dict[str, list[int]]:
        """Each of :meth:`files` with its size and modification time (ns): what a cache made from
        the model records, so that a retrained or replaced checkpoint is not taken for the old one."""
        return {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in self.files()}

    def check(self) -> None:
        """Cheap check before anything loads: a checkpoint file or local-dir folder must exist, a
        ``lakd:`` config must be shipped. LakdError naming the spec otherwise."""
        if self.scheme == "lakd" and self.target not in list_lakd_configs():
            raise LakdError(f"{self.text}: unknown lakd config (available: {', '.join(list_lakd_configs())})")
        if self.is_file:
            path = Path(self.target)
            if path.is_dir():
                raise LakdError(
                    f"{self.text}: is a directory, not a checkpoint file "
                    f"(an exported folder loads as local-dir:{self.text})"
                )
            if not path.is_file():
                raise LakdError(f"{self.text}: no such checkpoint file")
        if self.scheme == "local-dir" and not Path(self.target).is_dir():
            raise LakdError(f"{self.text}: no such folder")

    def benchmark_names(self, arch: str | None = None) -> tuple[str, str]:
        """The spec as clip_benchmark's ``(model, pretrained)``: ``open_clip:ARCH@TAG`` -> (ARCH, TAG),
        ``open_clip:ARCH`` -> (ARCH, ""), a checkpoint file read with ``arch`` -> (arch, file), any other
        spec -> (spec, "")."""
        if self.scheme == "open_clip":
            return self.target, self.tag or ""
        if arch and self.is_file:
            return arch, self.text
        return self.text, ""
