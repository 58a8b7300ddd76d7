"""A run killed with SIGKILL and resumed with ``--resume`` ends with the weights of an uninterrupted
run (``torch.equal``), wherever the kill lands: between steps, while a checkpoint file is being
written, and after a checkpoint is complete but before ``latest`` points at it.

Every run is its own process (same torch thread count for all), killed by a hook that the child
installs before training; the parent only reads the files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lakd.models.safe_load import read_checkpoint
from lakd.train.checkpoint import RunFolder

CONFIG = {
    "data": {"train": "shapes:train?n=40&image_size=32", "batch_size": 8},
    "student": {"model": "lakd:tiny-vit"},
    "recipe": "none",
    "schedule": {"steps": 8, "warmup": 2},
    "eval": {"data": None, "probes": None},
    "checkpoint": {"every": 2, "keep_last": 2},
    "log_every": 1,
}

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from lakd.train import load_train_config, train
    import lakd.train.loop as loop
    import lakd.models.checkpoint as model_checkpoint
    import lakd.train.checkpoint as train_checkpoint

    config, out, resume, kill = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", sys.argv[4]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if kill.startswith("after-step:"):  # between steps: step N done, nothing of it saved beyond the log
        at = int(kill.split(":")[1])
        real_step = loop._Steps.step
        def step(self, batch, index):
            values = real_step(self, batch, index)
            if index + 1 == at:
                die()
            return values
        loop._Steps.step = step
    elif kill.startswith("writing:"):  # half of the checkpoint file of step N written to its temp name
        at = int(kill.split(":")[1])
        real_save = model_checkpoint.torch.save
        def save(obj, path, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("training_state", {}).get("step") == at:
                real_save(obj, path, *args, **kwargs)
                file = getattr(path, "file", path)  # lakd hands torch.save a wrapper of the open temp file
                if hasattr(file, "flush"):
                    file.flush()
                name = getattr(file, "name", file)
                size = os.path.getsize(name)
                with open(name, "r+b") as f:
                    f.truncate(size // 2)
                die()
            return real_save(obj, path, *args, **kwargs)
        model_checkpoint.torch.save = save
    elif kill.startswith("before-latest:"):  # step N's checkpoint complete, `latest` still the previous
        at = int(kill.split(":")[1])
        real_write = train_checkpoint.write_text
        def write_text(path, text, **kwargs):
            if str(path).endswith("latest") and text.strip() == f"step_{at:06d}.pt":
                die()
            return real_write(path, text, **kwargs)
        train_checkpoint.write_text = write_text

    train(load_train_config(mapping=config), out=out, resume=resume, echo=lambda _: None)
    """
)


def run_child(out: Path, *, resume: bool = False, kill: str = "none") -> int:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(CONFIG), str(out), "1" if resume else "0", kill],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(result.stderr[-3000:])
    return result.returncode


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(out / "student.pt")[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("whole") / "run"
    assert run_child(out) == 0
    return final_weights(out)


@pytest.mark.parametrize(
    ("kill", "resumes_from"),
    [("after-step:3", 2), ("writing:4", 2), ("before-latest:6", 6)],
    ids=["between-steps", "while-writing-a-checkpoint", "before-latest-moves"],
)
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, uninterrupted, kill, resumes_from):
    out = tmp_path / "run"
    assert run_child(out, kill=kill) == -signal.SIGKILL
    run = RunFolder(out)
    assert not run.student.exists()
    if kill.startswith("writing"):
        assert list(run.checkpoints.glob(".step_000004.pt.*.tmp"))  # the half-written temp file
    assert max(run.steps()) == resumes_from
    assert run_child(out, resume=True) == 0
    resumed = final_weights(out)
    assert resumed.keys() == uninterrupted.keys()
    different = [key for key in resumed if not torch.equal(resumed[key], uninterrupted[key])]
    assert not different, different[:5]
    steps = [json.loads(line)["step"] for line in run.metrics_file.read_text().splitlines()]
    assert steps == list(range(1, 9))  # the log holds each step once, in order
    assert run.pointer("latest") == run.checkpoint(8)
    assert not list(run.path.rglob("*.tmp"))  # what the killed run left half-written is cleared
