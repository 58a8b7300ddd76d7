"""Training throughput of ``lakd train`` side by side with open_clip's own trainer and a bare loop.

Every trainer trains the same student (``lakd:tiny-vit``, batch 64, fp32, CPU) for the same number
of steps on the same data, a shapes-world folder written by ``lakd data shapes`` (PNGs +
``captions.csv``; lakd reads the folder, ``python -m open_clip_train.main`` its ``captions.csv``, the
first caption of each image on both sides). Each run is its own process with the same torch thread
count (``OMP_NUM_THREADS`` and lakd's ``precision.threads``) and the same number of DataLoader
workers. Throughput is steady state: the samples of the steps after ``--skip`` warm-up steps over
the sum of their step times, each trainer timing its steps in its own log (lakd: ``samples_per_s``
of ``metrics.jsonl`` with ``log_every: 1``; open_clip: ``Batch (t)`` of its ``out.log`` with
``--log-every-n-steps 1``; the bare loop: ``time.perf_counter`` around each step). Runs are
interleaved (every configuration once per round, in a new seeded order each round) so that other
work on the machine hits all of them alike; the load average is recorded before and after every run,
medians over rounds are reported, and ratios both as ratios of medians and as medians of the
per-round ratios.

Configurations (``CONFIGS``):

- ``lakd_plain``: ``lakd train`` with ``recipe: none`` and no evaluation (``eval.data: null``,
  ``eval.probes: null``);
- ``open_clip_plain``: ``python -m open_clip_train.main`` on the same student (a ``local-dir:``
  export of ``lakd:tiny-vit``: the same initial weights), AdamW betas / eps / weight decay / lr,
  warmup, cosine schedule and gradient clipping (1.0) as the lakd run;
- ``bare_loop``: forward, open_clip's ``ClipLoss``, backward, AdamW (CLIP's parameter groups; torch's
  fused kernel, as lakd's trainer uses) on one batch of pre-built tensors of the same folder: no data
  loading, no clipping, no logging;
- ``lakd_cached_fd`` / ``lakd_online_fd``: recipe ``fd`` (CLIP loss + feature distillation through
  projection heads) with the teacher's features from an embedding store of the training folder
  (``lakd embed``) or from the teacher's forward pass at each step;
- ``open_clip_distill``: open_clip's ``--distill-model`` / ``--distill-pretrained`` (its
  ``DistillClipLoss``: CLIP loss + KL between the teacher's and the student's logits, online).

The teacher is ``TEACHER_CFG``, a bigger ViT for the student's own 64 px images and 32-token text
(open_clip's trainer feeds the teacher the student's batch, so it must accept them), random init
(seed 1), written once as an open_clip ``local-dir:`` folder that both trainers load.

``tracking``: the evaluation and geometry tracking of ``experiments/shapes/teacher.yaml`` (its
``eval`` and ``track`` sections, ``eval.every`` as shipped) in a shorter run with several
evaluations: the seconds of the evaluations (``metrics.jsonl``) over the time of the training loop.

    python benchmarks/train_throughput.py            # writes benchmarks/results/train_throughput.json
    python benchmarks/train_throughput.py --quick    # a short sanity run (written to a temporary file)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from machine import load_averages, machine_info

from lakd.io import write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "train_throughput.json"
TEACHER_YAML = ROOT / "experiments" / "shapes" / "teacher.yaml"
STUDENT = "lakd:tiny-vit"
BATCH = 64
LR, WEIGHT_DECAY, BETAS, EPS, GRAD_CLIP, WARMUP = 1e-3, 0.1, (0.9, 0.98), 1e-6, 1.0, 10
TEACHER_NAME = "lakdbench-teacher-vit"
# a bigger ViT than lakd:tiny-vit (width 192, 4 layers; text width 128, 3 layers) on the same inputs
TEACHER_CFG = {
    "embed_dim": 384,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 384, "layers": 6, "head_width": 64, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 6, "mlp_ratio": 4.0},
}
CONFIGS = ("lakd_plain", "open_clip_plain", "bare_loop", "lakd_cached_fd", "lakd_online_fd", "open_clip_distill")
POLL_S = 0.1
TICKS = os.sysconf("SC_CLK_TCK")
OPEN_CLIP_LINE = re.compile(r"Train Epoch: \d+ \[\s*(\d+)/\d+ .*?Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+),")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, its live descendants and its reaped children (Linux /proc)."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS  # utime stime cutime cstime
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    return total


def count_lines(path: Path, marker: str | None = None) -> int:
    """Lines of a log written so far (those containing ``marker``)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if marker is None or marker in line)


class Bench:
    """The working folder, the shared settings and the way every run is started and recorded."""

    def __init__(self, work: Path, *, steps: int, skip: int, threads: int, workers: int):
        self.work, self.steps, self.skip = work, steps, skip
        self.threads, self.workers = threads, workers
        self.data = work / "shapes"
        self.student_dir = work / "student-local-dir"
        self.teacher_dir = work / "teacher-local-dir"
        self.store = work / "teacher-store"
        self.env = dict(os.environ)
        self.env.update(
            OMP_NUM_THREADS=str(threads),
            MKL_NUM_THREADS=str(threads),
            HF_HUB_OFFLINE="1",
            PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        )
        self.counter = 0

    def shown(self, argv: list[str]) -> str:
        """The command as it would be typed: ``python``, ``$WORK`` for the working folder."""
        text = shlex.join(["python" if a == sys.executable else a for a in argv])
        return text.replace(str(self.work), "$WORK")

    def call(
        self, argv: list[str], log: Path, cwd: Path | None = None, progress: Callable[[], int] | None = None
    ) -> tuple[float, list[tuple[float, float, int]]]:
        """Run ``argv``; its wall seconds and, with ``progress`` (steps done so far, read from the
        run's log), samples ``(wall s, CPU s of its process tree, steps done)`` every ``POLL_S``."""
        samples: list[tuple[float, float, int]] = []
        with open(log, "w", encoding="utf-8") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                if progress is not None:
                    cpu = tree_cpu_seconds(proc.pid)
                    samples.append((time.perf_counter() - start, cpu, progress()))
                time.sleep(POLL_S)
            seconds = time.perf_counter() - start
        if proc.returncode:
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"{self.shown(argv)} failed ({proc.returncode}):\n{tail}")
        return seconds, samples

    # -- the inputs, made once --------------------------------------------------------------------

    def prepare(self) -> dict[str, Any]:
        """The shapes folder (one epoch = ``steps`` batches), the student's and the teacher's
        ``local-dir`` exports and the teacher's embedding store of the folder."""
        import open_clip

        from lakd.models import export_local_dir, load_model

        made = self.work / "prepared.json"
        if made.is_file():  # made by an earlier invocation with this --work folder
            record = {**json.loads(made.read_text(encoding="utf-8")), "reused_from_earlier_invocation": True}
        else:
            record = {}
        n = BATCH * self.steps
        if not (self.data / "lakd_shapes.json").is_file():
            argv = [sys.executable, "-m", "lakd", "data", "shapes", "--out", str(self.data), "--n", str(n), "--split", "train"]
            record["data"] = {"command": self.shown(argv), "seconds": round(self.call(argv, self.work / "data.log")[0], 1)}
        record["data_items"] = n
        if not self.student_dir.is_dir():
            model, _, _ = load_model(STUDENT)
            export_local_dir(model, self.student_dir)
        if not self.teacher_dir.is_dir():
            configs = self.work / "configs"
            configs.mkdir(exist_ok=True)
            (configs / f"{TEACHER_NAME}.json").write_text(json.dumps(TEACHER_CFG), encoding="utf-8")
            open_clip.add_model_config(configs)
            model, _, _ = load_model(f"open_clip:{TEACHER_NAME}", seed=1)
            export_local_dir(model, self.teacher_dir)
        teacher, _, _ = load_model(f"local-dir:{self.teacher_dir}")
        student, _, _ = load_model(STUDENT)
        record["student_params_millions"] = round(sum(p.numel() for p in student.parameters()) / 1e6, 2)
        record["teacher_params_millions"] = round(sum(p.numel() for p in teacher.parameters()) / 1e6, 2)
        if not (self.store / "meta.json").is_file():
            argv = [
                sys.executable, "-m", "lakd", "embed", "--model", f"local-dir:{self.teacher_dir}",
                "--data", str(self.data), "--out", str(self.store), "--batch-size", str(BATCH),
            ]
            load = load_averages()
            seconds, _ = self.call(argv, self.work / "embed.log")
            record["teacher_store"] = {
                "command": self.shown(argv),
                "seconds": round(seconds, 1),
                "items_per_s": round(n / seconds, 1),
                "note": "one-time cost of the cached teacher (every caption of every image embedded)",
                "load_average_before": load,
            }
        if not made.is_file():
            write_json(made, record)
        return record

    # -- one run of each kind -----------------------------------------------------------------------

    def lakd_config(self, teacher: str) -> dict[str, Any]:
        teachers = {
            "none": ({"kind": "none"}, "none"),
            "cached": ({"kind": "cached", "store": str(self.store)}, "fd"),
            "online": ({"kind": "online", "model": f"local-dir:{self.teacher_dir}"}, "fd"),
        }
        section, recipe = teachers[teacher]
        return {
            "data": {"train": str(self.data), "batch_size": BATCH, "caption": "first", "workers": self.workers},
            "student": {"model": STUDENT},
            "teacher": section,
            "recipe": recipe,
            "optim": {"lr": LR, "weight_decay": WEIGHT_DECAY, "betas": list(BETAS), "eps": EPS, "grad_clip": GRAD_CLIP},
            "schedule": {"steps": self.steps, "warmup": WARMUP},
            "precision": {"amp": "fp32", "threads": self.threads},
            "eval": {"data": None, "probes": None},
            "checkpoint": {"every": self.steps, "keep_last": 1},
            "log_every": 1,
            "seed": 0,
        }

    def run_lakd(self, teacher: str) -> dict[str, Any]:
        self.counter += 1
        cfg = self.lakd_config(teacher)
        path = self.work / f"lakd-{teacher}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        out = self.work / f"run-{self.counter}"
        argv = [sys.executable, "-m", "lakd", "train", str(path), "--out", str(out)]
        load = load_averages()
        metrics = out / "metrics.jsonl"
        wall, samples = self.call(argv, self.work / f"run-{self.counter}.log", progress=lambda: count_lines(metrics))
        lines = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
        times = {rec["step"]: BATCH / rec["samples_per_s"] for rec in lines if rec.get("kind") == "train"}
        shutil.rmtree(out)
        return self.summary(times, wall, load, samples, command=self.shown(argv), config=cfg)

    def open_clip_argv(self, distill: bool, name: str) -> list[str]:
        argv = [
            sys.executable, "-m", "open_clip_train.main",
            "--model", f"local-dir:{self.student_dir}",
            "--train-data", str(self.data / "captions.csv"), "--dataset-type", "csv",
            "--csv-img-key", "filepath", "--csv-caption-key", "title", "--csv-separator", "\t",
            "--batch-size", str(BATCH), "--epochs", "1", "--precision", "fp32", "--workers", str(self.workers),
            "--lr", str(LR), "--wd", str(WEIGHT_DECAY), "--beta1", str(BETAS[0]), "--beta2", str(BETAS[1]),
            "--eps", str(EPS), "--warmup", str(WARMUP), "--grad-clip-norm", str(GRAD_CLIP),
            "--log-every-n-steps", "1", "--zeroshot-frequency", "0", "--seed", "0", "--device", "cpu",
            "--logs", str(self.work / "open_clip_logs"), "--name", name,
        ]
        if distill:
            # a local-dir model carries its weights; open_clip ignores --distill-pretrained for it,
            # but distils only when both flags are given
            argv += ["--distill-model", f"local-dir:{self.teacher_dir}", "--distill-pretrained", "local-dir"]
        return argv

    def run_open_clip(self, distill: bool) -> dict[str, Any]:
        self.counter += 1
        name = f"run-{self.counter}"
        argv = self.open_clip_argv(distill, name)
        load = load_averages()
        log_dir = self.work / "open_clip_logs" / name
        # captions.csv names images relative to its folder; open_clip opens them relative to the cwd
        wall, samples = self.call(
            argv, self.work / f"{name}.log", cwd=self.data, progress=lambda: count_lines(log_dir / "out.log", "Train Epoch")
        )
        times, data_times = {}, {}
        for match in OPEN_CLIP_LINE.finditer((log_dir / "out.log").read_text(encoding="utf-8")):
            step = int(match.group(1)) // BATCH
            data_times[step], times[step] = float(match.group(2)), float(match.group(3))
        shutil.rmtree(log_dir)
        record = self.summary(times, wall, load, samples, command=self.shown(argv))
        record["mean_data_wait_s"] = round(statistics.fmean(v for k, v in data_times.items() if k > self.skip), 4)
        return record

    def run_bare(self) -> dict[str, Any]:
        self.counter += 1
        out = self.work / f"bare-{self.counter}.json"
        argv = [
            sys.executable, str(Path(__file__).resolve()), "--bare-loop", str(out),
            "--data-dir", str(self.data), "--steps", str(self.steps), "--threads", str(self.threads),
        ]
        load = load_averages()
        wall, _ = self.call(argv, self.work / f"bare-{self.counter}.log")
        found = json.loads(out.read_text(encoding="utf-8"))
        times = {int(k): v for k, v in found["wall"].items()}
        cpu = sum(found["cpu"][str(s)] for s in range(self.skip + 1, self.steps + 1)) / (self.steps - self.skip)
        return self.summary(times, wall, load, cpu_s_per_step=cpu, command=self.shown(argv))

    def summary(
        self,
        times: dict[int, float],
        wall: float,
        load: list[float],
        samples: list[tuple[float, float, int]] | None = None,
        *,
        cpu_s_per_step: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Steady state of one run from its per-step seconds (steps numbered from 1) and the CPU
        seconds per step of its processes over the same steps (from the polled ``samples``)."""
        if sorted(times) != list(range(1, self.steps + 1)):
            raise RuntimeError(f"expected step times for steps 1..{self.steps}, got {sorted(times)[:5]}...")
        steady = [times[s] for s in range(self.skip + 1, self.steps + 1)]
        polled_wall = None
        if samples:
            first = next(x for x in samples if x[2] >= self.skip)
            last = next(x for x in samples if x[2] >= self.steps)
            cpu_s_per_step = (last[1] - first[1]) / (last[2] - first[2])
            polled_wall = (last[0] - first[0]) / (last[2] - first[2])
        return {
            "samples_per_s": round(BATCH * len(steady) / sum(steady), 2),
            "median_step_s": round(statistics.median(steady), 4),
            "cpu_s_per_step": round(cpu_s_per_step, 4),
            "polled_wall_s_per_step": round(polled_wall, 4) if polled_wall is not None else None,
            "steps_timed": len(steady),
            "process_wall_s": round(wall, 1),
            "load_average_before": load,
            "load_average_after": load_averages(),
            **extra,
        }

    def run(self, name: str) -> dict[str, Any]:
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "lakd_plain": lambda: self.run_lakd("none"),
            "open_clip_plain": lambda: self.run_open_clip(False),
            "bare_loop": self.run_bare,
            "lakd_cached_fd": lambda: self.run_lakd("cached"),
            "lakd_online_fd": lambda: self.run_lakd("online"),
            "open_clip_distill": lambda: self.run_open_clip(True),
        }
        return runners[name]()

    # -- tracking --------------------------------------------------------------------------------

    def run_tracking(self, steps: int, every: int | None) -> dict[str, Any]:
        """``experiments/shapes/teacher.yaml`` for ``steps`` steps (``every``: its eval.every unless
        given), threads and precision as the other runs; eval seconds over the training loop's time."""
        cfg = yaml.safe_load(TEACHER_YAML.read_text(encoding="utf-8"))
        every = every or cfg["eval"]["every"]
        cfg["schedule"]["steps"] = steps
        cfg["schedule"]["warmup"] = min(cfg["schedule"]["warmup"], steps)
        cfg["eval"]["every"] = every
        cfg["checkpoint"]["every"] = every
        cfg["precision"] = {"amp": "fp32", "threads": self.threads}
        path = self.work / "tracking.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        out = self.work / "run-tracking"
        argv = [sys.executable, "-m", "lakd", "train", str(path), "--out", str(out)]
        load = load_averages()
        wall, _ = self.call(argv, self.work / "run-tracking.log")
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        shutil.rmtree(out)
        evals = [rec for rec in lines if rec.get("kind") == "eval"]
        train = [rec for rec in lines if rec.get("kind") == "train"]
        eval_s = [rec["seconds"] for rec in evals]
        # a log window runs from the previous log line to this one, so the windows cover the whole loop
        # but the evaluation and checkpoint after the last log line (the final evaluation is timed)
        windows, quiet, previous = [], [], 0
        for rec in train:
            seconds = (rec["step"] - previous) * cfg["data"]["batch_size"] / rec["samples_per_s"]
            windows.append(seconds)
            if previous > 0 and previous % every:  # not the first window, none after an evaluation
                quiet.append(seconds / (rec["step"] - previous))
            previous = rec["step"]
        loop_s = sum(windows) + (eval_s[-1] if evals and evals[-1]["step"] == steps else 0.0)
        return {
            "command": self.shown(argv),
            "config": {k: cfg[k] for k in ("data", "student", "eval", "track", "checkpoint", "schedule", "log_every")},
            "shipped": {k: yaml.safe_load(TEACHER_YAML.read_text(encoding="utf-8"))[s][f] for k, s, f in (("steps", "schedule", "steps"), ("eval_every", "eval", "every"))},
            "evaluations": [{"step": rec["step"], "seconds": round(rec["seconds"], 2)} for rec in evals],
            "eval_seconds": round(sum(eval_s), 1),
            "loop_seconds": round(loop_s, 1),
            "process_wall_s": round(wall, 1),
            "eval_fraction": round(sum(eval_s) / loop_s, 4),
            "median_step_s_between_evals": round(statistics.median(quiet), 4) if quiet else None,
            "load_average_before": load,
            "load_average_after": load_averages(),
        }


def bare_loop(out: Path, data_dir: Path, steps: int, threads: int) -> None:
    """The limit: the student's forward, ClipLoss, backward and AdamW on one pre-built batch."""
    import open_clip

    from lakd.data import open_source
    from lakd.models import load_model
    from lakd.train.loop import param_groups

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, preprocess, tokenizer = load_model(STUDENT)
    model.train()
    source = open_source(str(data_dir))
    items = [source[i] for i in range(BATCH)]
    images = torch.stack([preprocess(item.image) for item in items])
    tokens = tokenizer([item.captions[0] for item in items])
    optimizer = torch.optim.AdamW(param_groups(model, WEIGHT_DECAY), lr=LR, betas=BETAS, eps=EPS, fused=True)
    loss_fn = open_clip.ClipLoss()
    times: dict[str, dict[int, float]] = {"wall": {}, "cpu": {}}
    for step in range(1, steps + 1):
        start, cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        image_features, text_features, logit_scale = model(images, tokens)[:3]
        loss_fn(image_features, text_features, logit_scale).backward()
        optimizer.step()
        times["wall"][step] = time.perf_counter() - start
        times["cpu"][step] = time.process_time() - cpu
    out.write_text(json.dumps(times), encoding="utf-8")


def medians(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    table = {}
    for name, records in runs.items():
        rates = [r["samples_per_s"] for r in records]
        table[name] = {
            "median_samples_per_s": round(statistics.median(rates), 2),
            "min_samples_per_s": min(rates),
            "max_samples_per_s": max(rates),
            "median_step_s": round(statistics.median(r["median_step_s"] for r in records), 4),
            "median_cpu_s_per_step": round(statistics.median(r["cpu_s_per_step"] for r in records), 4),
            "rounds": len(records),
        }
    return table


def ratio(runs, a: str, b: str, *, goal: str, inverse: bool = False) -> dict[str, Any] | None:
    """Throughput of ``a`` over ``b`` (``inverse``: the step time of ``a`` over ``b``'s): from the
    trainers' own step times (wall clock; the goal is judged on its ratio of medians) and from the
    CPU seconds per step of their processes (less sensitive to other work on the machine)."""
    if a not in runs or b not in runs:
        return None

    def of(key: str, rate: bool) -> dict[str, Any]:
        def value(x: dict[str, Any], y: dict[str, Any]) -> float:
            r = x[key] / y[key] if rate else y[key] / x[key]
            return 1 / r if inverse else r

        paired = [value(x, y) for x, y in zip(runs[a], runs[b], strict=True)]
        medians_a = {key: statistics.median(r[key] for r in runs[a])}
        medians_b = {key: statistics.median(r[key] for r in runs[b])}
        return {
            "ratio_of_medians": round(value(medians_a, medians_b), 3),
            "median_per_round_ratio": round(statistics.median(paired), 3),
            "per_round_ratios": [round(v, 3) for v in paired],
        }

    wall, cpu = of("samples_per_s", True), of("cpu_s_per_step", False)
    found = {"wall_clock": wall, "cpu_time": cpu, "goal": goal}
    if goal.startswith(("<=", ">=")):
        bound = float(goal.split()[1])
        judge = (lambda v: v >= bound) if goal.startswith(">=") else (lambda v: v <= bound)
        found["met"] = judge(wall["ratio_of_medians"])
        found["met_by_cpu_time"] = judge(cpu["ratio_of_medians"])
    return found


def ratios(runs) -> dict[str, Any]:
    info = "none (information)"
    found = {
        "lakd_plain_over_open_clip_plain": ratio(runs, "lakd_plain", "open_clip_plain", goal=">= 1.5"),
        "lakd_plain_over_bare_loop": ratio(runs, "lakd_plain", "bare_loop", goal=">= 0.9"),
        "lakd_cached_fd_over_open_clip_distill": ratio(runs, "lakd_cached_fd", "open_clip_distill", goal=">= 1.5"),
        "lakd_cached_fd_step_time_over_lakd_plain": ratio(runs, "lakd_cached_fd", "lakd_plain", goal="<= 1.1", inverse=True),
        "lakd_cached_fd_over_lakd_online_fd": ratio(runs, "lakd_cached_fd", "lakd_online_fd", goal=info),
        "lakd_online_fd_over_open_clip_distill": ratio(runs, "lakd_online_fd", "open_clip_distill", goal=info),
        "open_clip_plain_over_bare_loop": ratio(runs, "open_clip_plain", "bare_loop", goal=info),
    }
    return {k: v for k, v in found.items() if v is not None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short sanity run (written to a temporary file)")
    parser.add_argument("--steps", type=int, help="steps of every run (default 60; --quick 12)")
    parser.add_argument("--skip", type=int, help="warm-up steps left out of the timing (default 20; --quick 4)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; --quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every run (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of every trainer (default 1)")
    parser.add_argument("--only", action="append", choices=[*CONFIGS, "tracking"], help="run only these (repeatable)")
    parser.add_argument("--tracking-steps", type=int, help="steps of the tracking run (default 900; --quick 40)")
    parser.add_argument("--tracking-every", type=int, help="eval.every of the tracking run (default: teacher.yaml's; --quick 20)")
    parser.add_argument("--work", type=Path, help="keep the data, exports, store and logs here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="JSON file to write (default benchmarks/results/train_throughput.json)")
    parser.add_argument("--bare-loop", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    steps = args.steps or (12 if quick else 60)
    if args.bare_loop:
        bare_loop(args.bare_loop, args.data_dir, steps, args.threads)
        return {}
    skip = args.skip if args.skip is not None else (4 if quick else 20)
    rounds = args.rounds or (1 if quick else 5)
    tracking_steps = args.tracking_steps or (40 if quick else 900)
    tracking_every = args.tracking_every or (20 if quick else None)
    out = args.out or (Path(tempfile.gettempdir()) / "train_throughput.quick.json" if quick else RESULTS)
    selected = args.only or [*CONFIGS, "tracking"]
    configs = [c for c in CONFIGS if c in selected]
    if not 0 <= skip < steps:
        parser.error("--skip must be in [0, --steps)")

    machine = machine_info()
    temporary = None if args.work else tempfile.TemporaryDirectory(prefix="lakd-train-bench-")
    work = args.work or Path(temporary.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        bench = Bench(work.resolve(), steps=steps, skip=skip, threads=args.threads, workers=args.workers)
        prepared = bench.prepare()
        print(f"prepared: {prepared}", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
        order = random.Random(0)
        for r in range(rounds):
            for name in order.sample(configs, len(configs)):
                record = bench.run(name)
                runs[name].append({"round": r, **record})
                print(
                    f"round {r} {name:18s} {record['samples_per_s']:7.2f} samples/s  median step {record['median_step_s']:.3f} s"
                    f"  CPU {record['cpu_s_per_step']:.3f} s/step"
                    f"  load {record['load_average_before'][0]} -> {record['load_average_after'][0]}",
                    flush=True,
                )
        table = medians(runs) if rounds and configs else {}
        tracking = None
        if "tracking" in selected:
            tracking = bench.run_tracking(tracking_steps, tracking_every)
            tracking["goal"] = "eval_fraction <= 0.10"
            tracking["met"] = tracking["eval_fraction"] <= 0.10
            print(f"tracking: {tracking['eval_fraction']:.3f} of the loop in evaluations ({tracking['evaluations']})")
    finally:
        if temporary is not None:
            temporary.cleanup()

    result = {
        "settings": {
            "student": STUDENT,
            "teacher": {"config": TEACHER_CFG, "init": "random (seed 1), open_clip local-dir export"},
            "batch_size": BATCH,
            "precision": "fp32",
            "device": "cpu",
            "torch_threads": args.threads,
            "dataloader_workers": args.workers,
            "steps_per_run": steps,
            "warmup_steps_skipped": skip,
            "rounds": rounds,
            "optimizer": {"lr": LR, "weight_decay": WEIGHT_DECAY, "betas": list(BETAS), "eps": EPS, "grad_clip": GRAD_CLIP, "warmup": WARMUP, "schedule": "cosine"},
            "timing": {
                "lakd": "samples_per_s of metrics.jsonl, log_every 1 (one window per step, data loading included)",
                "open_clip": "'Batch (t)' of out.log, --log-every-n-steps 1 (data loading included)",
                "bare_loop": "perf_counter around zero_grad, forward, ClipLoss, backward, AdamW step",
                "throughput": "samples of the steps after the warm-up over the sum of their step times",
            },
            "data": "lakd data shapes folder (PNG + captions.csv, one row per image); lakd: the folder with caption: first; open_clip: captions.csv (title = first caption)",
            "preprocessing": "lakd: the model's eval transform (resize, centre crop); open_clip_train: its train transform (RandomResizedCrop scale 0.9-1)",
            "quick": quick,
        },
        "machine": machine,
        "prepared": prepared,
        "medians": table,
        "ratios": ratios(runs) if table else {},
        "runs": runs,
    }
    if tracking is not None:
        result["tracking"] = tracking
    result["machine_after"] = {"load_average_1_5_15min": load_averages()}
    write_json(out, result)
    for name, row in table.items():
        print(f"{name:18s} {row['median_samples_per_s']:7.2f} samples/s (median of {row['rounds']})")
    for name, row in result["ratios"].items():
        wall, cpu = row["wall_clock"], row["cpu_time"]
        print(
            f"{name}: {wall['ratio_of_medians']} (per round {wall['median_per_round_ratio']}; CPU time "
            f"{cpu['ratio_of_medians']}), goal {row['goal']}, met {row.get('met', '-')}"
        )
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
