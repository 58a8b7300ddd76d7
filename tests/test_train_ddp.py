"""``lakd train`` under torchrun with 2 CPU processes (gloo): both ranks hold equal weights, 2 ranks x
16 items per step make the same update as 1 rank x 32 (float tolerance) for ``none`` and ``fd``, and
a 2-rank checkpoint resumes in 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lakd.models import load_model
from lakd.models.embed import EmbedConfig, embed
from lakd.models.safe_load import read_checkpoint

TRAIN = "shapes:train?n=64&image_size=32"

CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    from lakd.models.checkpoint import unwrap
    from lakd.train import load_train_config, train
    import lakd.train.loop as loop

    config, out, resume = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
    real_finish = loop._Steps._finish

    def finish(self, stop):  # every rank keeps its own final weights, to compare them
        rank = dist.get_rank() if dist.is_initialized() else 0
        student = unwrap(self.setup.task.student)
        torch.save({k: v.detach().clone() for k, v in student.state_dict().items()}, f"{out}/rank{rank}.pt")
        real_finish(self, stop)

    loop._Steps._finish = finish
    train(load_train_config(mapping=config), out=out, resume=resume, echo=lambda _: None)
    """
)


def config(recipe: str, store: Path | None, steps: int = 3) -> dict:
    teacher = {"kind": "cached", "store": str(store)} if store else {"kind": "none"}
    return {
        "data": {"train": TRAIN, "batch_size": 32},
        "student": {"model": "lakd:tiny-vit"},
        "teacher": teacher,
        "recipe": recipe,
        "schedule": {"steps": steps, "warmup": 1},
        "eval": {"data": None, "probes": None},
        "checkpoint": {"every": 1, "keep_last": 3},
        "log_every": 1,
    }


def launch(cfg: dict, out: Path, *, ranks: int, resume: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    script = out.parent / f"{out.name}-child.py"
    script.write_text(CHILD)
    args = [json.dumps(cfg), str(out), "1" if resume else "0"]
    if ranks == 1:
        command = [sys.executable, str(script), *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", str(script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-4000:]


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in a if not torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5)]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "store"
    embed(EmbedConfig(model="lakd:tiny-resnet", data=TRAIN, out=str(path), batch_size=32))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["none", "fd"])
def test_two_ranks_equal_one_rank_with_the_whole_batch(tmp_path, store, recipe):
    cfg = config(recipe, store if recipe != "none" else None)
    launch(cfg, tmp_path / "one", ranks=1)
    launch(cfg, tmp_path / "two", ranks=2)
    rank0 = torch.load(tmp_path / "two" / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "two" / "rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # DDP keeps the ranks identical
    single = torch.load(tmp_path / "one" / "rank0.pt", weights_only=True)
    assert not close(rank0, single)  # equal up to the order of float sums
    init = {f"student.{k}": v for k, v in load_model("lakd:tiny-vit", seed=0)[0].state_dict().items()}
    assert len(close(init, single)) > len(init) // 2  # and the steps moved the weights beyond that tolerance
    logs = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    singles = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    for two, one in zip(logs, singles, strict=True):  # logged losses are of the global batch
        assert two["loss/total"] == pytest.approx(one["loss/total"], rel=1e-4)


@pytest.mark.slow
def test_two_rank_checkpoint_resumes_in_one_process(tmp_path, store):
    cfg = config("fd", store)
    out = tmp_path / "run"
    launch({**cfg, "schedule": {"steps": 3, "warmup": 1}}, out, ranks=2)
    reference = read_checkpoint(out / "checkpoints" / "step_000003.pt")[0]
    # drop the last checkpoint: resume from step 2 in a single process and redo step 3
    (out / "checkpoints" / "step_000003.pt").unlink()
    (out / "student.pt").unlink()
    launch(cfg, out, ranks=1, resume=True)
    resumed = read_checkpoint(out / "student.pt")[0]
    assert not close(resumed, reference)
