"""Shared test fixtures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def load_script():
    """``load_script(path, name)``: a script of the repository (e.g. ``experiments/shapes/sweep.py``)
    imported as the module ``name``, so tests call its functions."""

    def load(path: Path, name: str):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load
