"""The ``lakd`` command line: parse arguments, build a config, call one library function.

Heavy imports (torch, open_clip) happen inside the commands, so ``lakd --help`` is instant.
Each command builds its config dataclass from a mapping of its option values through the strict
loader (:func:`build_config`). User-input problems surface as :class:`lakd.errors.LakdError` and
are printed as one line (``error: ...``) with exit status 1; ``--debug`` shows the traceback
instead. Library messages name config fields (:mod:`lakd.errors`); the printer shows each field as
the running command's flag (:data:`FIELD_FLAGS`), or as written when the command has none.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, TypeVar

import typer

from lakd.data.base import MAX_IMAGE_BYTES
from lakd.errors import LEADING_FIELD, QUOTED_FIELD, LakdError

T = TypeVar("T")

app = typer.Typer(
    name="lakd",
    help="Latent-alignment-aware knowledge distillation of CLIP: geometry diagnostics and distillation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate and export data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# ---- config fields as flags ---------------------------------------------------------------------
# The flag of a config field is ``--`` + its name with ``_`` -> ``-``, except for the fields below.
# A field is shown as its flag only by a command that has that flag (see _RunningCommand).
FIELD_FLAGS: dict[str, str] = {
    "num_workers": "--workers",  # lakd embed
    "models": "--model",  # lakd geometry report (repeatable)
    "students": "--student",  # lakd geometry report (repeatable)
    "modalities": "--modality",  # lakd whiten fit (repeatable)
    "recipes": "--recipe",  # lakd demo (repeatable)
}


def field_flag(name: str) -> str:
    """The flag of the config field ``name`` (``source_options.download`` -> ``--download``)."""
    leaf = name.rpartition(".")[2]
    return FIELD_FLAGS.get(leaf, "--" + leaf.replace("_", "-"))


def config_fields(cls: type, prefix: str = "") -> Iterator[str]:
    """Names of the fields of the dataclass ``cls``; a section's fields both dotted and bare
    (``source_options``, ``source_options.download``, ``download``), as messages of the code that
    receives the section name them bare."""
    for f in dataclasses.fields(cls):
        yield prefix + f.name
        section = next((t for t in _annotation_types(cls, f.name) if dataclasses.is_dataclass(t)), None)
        if section is not None:
            yield from config_fields(section, f"{prefix}{f.name}.")
            if not prefix:
                yield from config_fields(section)


def _annotation_types(cls: type, name: str) -> tuple:
    tp = typing.get_type_hints(cls)[name]
    return typing.get_args(tp) or (tp,)


@dataclass
class _RunningCommand:
    """What the error printer knows of the command that runs: ``flags`` maps each config field the
    command has a flag for to that flag; ``given`` holds the strings the user gave (a message that
    starts with one of them, say ``out: ...`` for ``--out out``, starts with a value, not a field)."""

    flags: dict[str, str]
    given: frozenset[str] = frozenset()

    def show(self, message: str) -> str:
        """``message`` with its fields (backquoted, or a leading ``field:``) written as flags."""
        message = QUOTED_FIELD.sub(lambda m: self.flags.get(m[1], m[0]), message)
        leading = LEADING_FIELD.match(message)
        if leading and leading[1] in self.flags and leading[1] not in self.given:
            message = self.flags[leading[1]] + message[leading.end(1) :]
        return message


_running: _RunningCommand | None = None


def _note_command(
    ctx: typer.Context, fields: Iterator[str] | None, values: Mapping[str, Any] | None = None
) -> None:
    """Record the running command (``ctx``) for the error printer; ``fields``: its config's fields
    (None: the command's own parameter names); ``values``: its config's values."""
    global _running
    command = ctx.command
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    names = [p.name for p in command.params] if fields is None else list(fields)
    flags = {name: field_flag(name) for name in names if field_flag(name) in options}
    given = {*_strings(ctx.params), *_strings(values or {})}
    _running = _RunningCommand(flags, frozenset(given))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str | PurePath):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def build_config(ctx: typer.Context, cls: type[T], values: Mapping[str, Any]) -> T:
    """The config ``cls`` of the running command ``ctx`` from its option values, through the strict
    loader (:func:`lakd.config.from_mapping`); messages from then on name the command's flags."""
    from lakd.config import from_mapping

    _note_command(ctx, config_fields(cls), values)
    return from_mapping(cls, values, source=ctx.command_path)


def show_fields(message: str) -> str:
    """A library message as the running command prints it (fields as its flags)."""
    return message if _running is None else _running.show(message)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    """lakd: measure CLIP embedding geometry and distil CLIP teachers into small students."""


# ---- data options, stated once ---------------------------------------------------------------
# What the data is belongs in the data spec (``captions.csv?img_key=...&root=DIR``); the flags below
# are aliases that fill the spec's options. What a source may do (download, leave its image folder)
# is SourceOptions. ``@data_options`` adds all of them to a command, which receives ``data_flags``.

DATA_FLAGS: tuple[inspect.Parameter, ...] = tuple(
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, default, annotation in (
        (
            "image_root",
            None,
            Annotated[str | None, typer.Option("--image-root", help="Image folder of a CSV or COCO JSON (the spec's root=).")],
        ),
        (
            "csv_img_key",
            None,
            Annotated[str | None, typer.Option("--csv-img-key", help="CSV column with image paths (img_key=; default filepath).")],
        ),
        (
            "csv_caption_key",
            None,
            Annotated[str | None, typer.Option("--csv-caption-key", help="CSV column with captions (caption_key=; default title).")],
        ),
        (
            "csv_sep",
            None,
            Annotated[str | None, typer.Option("--csv-separator", help="CSV separator (sep=; tab, comma, ...; default: detect).")],
        ),
        (
            "download",
            False,
            Annotated[bool, typer.Option("--download", help="Allow torchvision data sets to download (tv:NAME).")],
        ),
        (
            "allow_outside_root",
            False,
            Annotated[bool, typer.Option("--allow-outside-root", help="Accept image paths that leave the data folder.")],
        ),
        (
            "max_image_bytes",
            MAX_IMAGE_BYTES,
            Annotated[
                int,
                typer.Option("--max-image-bytes", min=1, help="Skip image files larger than this (default 64 MiB)."),
            ],
        ),
    )
)
# flag -> the data-spec option it fills
SPEC_ALIASES = {"image_root": "root", "csv_img_key": "img_key", "csv_caption_key": "caption_key", "csv_sep": "sep"}


@dataclass(frozen=True)
class DataFlags:
    """The values of the shared data flags of one command call."""

    values: dict

    def spec(self, data: str | None) -> str | None:
        """``data`` with the alias flags written into its options (None stays None)."""
        from lakd.data.sources import with_query

        if data is None:
            given = [f"--{flag.replace('_', '-')}" for flag in SPEC_ALIASES if self.values[flag] is not None]
            if given:
                raise LakdError(f"{', '.join(given)}: only used with --data")
            return None
        return with_query(data, {option: self.values[flag] for flag, option in SPEC_ALIASES.items()})

    @property
    def options(self):
        from lakd.data.base import SourceOptions

        return SourceOptions(**self.source_options)

    @property
    def source_options(self) -> dict[str, bool | int]:
        """The :class:`~lakd.data.base.SourceOptions` fields, as a config mapping."""
        return {name: self.values[name] for name in ("download", "allow_outside_root", "max_image_bytes")}


def data_options(command: Callable) -> Callable:
    """Give ``command`` the shared data flags; it receives them as ``data_flags: DataFlags``."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "data_flags"]

    @functools.wraps(command)
    def wrapper(**kwargs):
        flags = DataFlags({p.name: kwargs.pop(p.name) for p in DATA_FLAGS})
        return command(**kwargs, data_flags=flags)

    wrapper.__signature__ = signature.replace(parameters=[*own, *DATA_FLAGS])  # type: ignore[attr-defined]
    return wrapper


@data_app.command("shapes")
def data_shapes(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder to write (PNGs, captions.csv, scenes.jsonl).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of scenes.")] = 1000,
    split: Annotated[str, typer.Option("--split", help="train, val, test or probes.")] = "train",
    seed: Annotated[int, typer.Option("--seed", help="World seed.")] = 0,
    image_size: Annotated[int, typer.Option("--image-size", min=16, help="Image side in pixels.")] = 64,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing folder.")] = False,
) -> None:
    """Export the procedural shapes world: PNGs plus captions.csv in open_clip's CSV convention."""
    from lakd.data.shapes import export_shapes

    _note_command(ctx, None)
    path = export_shapes(out, split=split, n=n, seed=seed, image_size=image_size, overwrite=overwrite)
    typer.echo(f"wrote {n} {split} scenes to {path} (captions.csv, scenes.jsonl, images/)")


@app.command()
@data_options
def embed(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option("--model", help="Model spec (ckpt.pt, open_clip:ARCH[@TAG], lakd:NAME, ...).")
    ],
    data: Annotated[
        str, typer.Option("--data", help="Data spec (shapes:val, a CSV, a folder, wds:..., tv:...).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Embedding store folder to write.")],
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")] = "cpu",
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Items per shard.")] = 10000,
    dtype: Annotated[str, typer.Option("--dtype", help="float32 or float16 on disk.")] = "float32",
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader worker processes.")] = 0,
    arch: Annotated[
        str | None, typer.Option("--arch", help="open_clip arch for a bare open_clip checkpoint.")
    ] = None,
    allow_nonfinite: Annotated[
        bool, typer.Option("--allow-nonfinite", help="Drop NaN/Inf rows (with a count) instead of failing.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a store made with other settings.")
    ] = False,
    data_flags: DataFlags | None = None,
) -> None:
    """Write raw image and text embeddings of a data set to an embedding store (resumable)."""
    from lakd.models.embed import EmbedConfig
    from lakd.models.embed import embed as run_embed

    cfg = build_config(
        ctx,
        EmbedConfig,
        {
            "model": model,
            "data": data_flags.spec(data),
            "out": str(out),
            "batch_size": batch_size,
            "device": device,
            "shard_size": shard_size,
            "dtype": dtype,
            "num_workers": workers,
            "allow_nonfinite": allow_nonfinite,
            "overwrite": overwrite,
            "arch": arch,
            "source_options": data_flags.source_options,
        },
    )
    store = run_embed(cfg)
    typer.echo(
        f"wrote {store.n_items} items / {store.n_texts} captions "
        f"(image dim {store.dim('image')}, text dim {store.dim('text')}) to {out}"
    )


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes.")] = Path(
        "lakd_demo"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Tiny budgets (about a minute), for a smoke test.")] = False,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Where the trained teacher is cached (default ~/.cache/lakd).")
    ] = None,
    recipe: Annotated[
        list[str] | None, typer.Option("--recipe", help="Recipes to distil (repeatable; default all five).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the data, the models and every sample.")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")] = "cpu",
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", help="Students trained at once (default: one per CPU core on CPU, 1 on CUDA)."),
    ] = None,
) -> None:
    """Train a shapes-world teacher (cached), distil students with each recipe, evaluate, report."""
    from lakd.demo import RECIPES, DemoConfig, run_demo

    cfg = build_config(
        ctx,
        DemoConfig,
        {
            "out": str(out),
            "quick": quick,
            "cache_dir": str(cache_dir) if cache_dir else None,
            "recipes": list(recipe or RECIPES),
            "seed": seed,
            "device": device,
            "jobs": jobs,
        },
    )
    run_demo(cfg, echo=typer.echo)


# ---- lakd train -------------------------------------------------------------------------------


@app.command(
    context_settings={"allow_extra_args": False},
    help=(
        "Train a CLIP student: lakd train CONFIG.yaml [key.sub=value ...] [--out DIR] [--max-steps N] "
        "[--resume | --overwrite] [--device D].  lakd train plot RUN writes RUN/training.html and PNGs."
    ),
)
def train(
    args: Annotated[
        list[str], typer.Argument(help="CONFIG.yaml then dotted overrides (optim.lr=3e-4 recipe=fd); or: plot RUN")
    ],
    out: Annotated[str | None, typer.Option("--out", help="Run folder (default: out in the config).")] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop once this many steps are done (resumable).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its newest checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a previous lakd run at --out.")] = False,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1, ... (default: the config's).")] = None,
) -> None:
    """Train a student as a YAML config says (torchrun: ``torchrun --nproc-per-node N -m lakd train ...``)."""
    if args[0] == "plot":
        from lakd.report.training import plot_run

        if len(args) != 2:
            raise LakdError("usage: lakd train plot RUN")
        for path in plot_run(args[1]):
            typer.echo(str(path))
        return
    from lakd.train import load_train_config
    from lakd.train import train as run_train

    config, overrides = args[0], list(args[1:])
    if device is not None:
        overrides.append(f"device={device}")
    cfg = load_train_config(config, overrides)
    path = run_train(cfg, out=out, max_steps=max_steps, resume=resume, overwrite=overwrite, echo=typer.echo)
    typer.echo(f"run: {path}")


# ---- lakd eval -------------------------------------------------------------------------------

eval_app = typer.Typer(
    help=(
        "Zero-shot classification, retrieval and compositional probes (clip_benchmark-format JSON).\n\n"
        "lakd eval --model SPEC --data SOURCE --out results.json  |  "
        "lakd eval --embeddings DIR --out results.json  |  lakd eval table FILES... --out table.csv"
    ),
    invoke_without_command=True,
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")


@eval_app.callback(invoke_without_command=True)
@data_options
def eval_run(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("--model", help="Model spec to evaluate (with --data).")
    ] = None,
    embeddings: Annotated[
        str | None,
        typer.Option("--embeddings", help="Embedding store to evaluate (class prompts beside it)."),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Data spec (shapes:val, shapes:probes, a folder, tv:...).")
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="zeroshot, retrieval, probes, dense-probes (a head on token-by-patch maps), or all "
            "(every task the data supports but dense-probes).",
        ),
    ] = "all",
    out: Annotated[
        Path | None, typer.Option("--out", help="Result JSON; may contain {task} for one file per task.")
    ] = None,
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="Teacher model spec: adds teacher-agreement metrics.")
    ] = None,
    teacher_embeddings: Annotated[
        str | None, typer.Option("--teacher-embeddings", help="Teacher embedding store of the same items.")
    ] = None,
    templates: Annotated[
        Path | None, typer.Option("--templates", help="Prompt template file: one template with {c} a line.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")] = "cpu",
    arch: Annotated[
        str | None, typer.Option("--arch", help="open_clip arch for a bare open_clip checkpoint.")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Embedding cache (default: eval-cache/ beside --out).")
    ] = None,
    allow_nonfinite: Annotated[
        bool, typer.Option("--allow-nonfinite", help="Drop NaN/Inf rows (with a count) instead of failing.")
    ] = False,
    head_width: Annotated[
        int | None, typer.Option("--head-width", min=1, help="dense-probes: the head's channels (128).")
    ] = None,
    head_steps: Annotated[
        int | None, typer.Option("--head-steps", min=1, help="dense-probes: the head's training steps (300).")
    ] = None,
    head_data: Annotated[
        str | None,
        typer.Option("--head-data", help="dense-probes: probes to train the head on (shapes:probes?n=1000&seed=1)."),
    ] = None,
    data_flags: DataFlags | None = None,
) -> None:
    """Evaluate a model (or an embedding store); `lakd eval table` merges result files into a CSV."""
    if ctx.invoked_subcommand is not None:
        return
    from lakd.eval import EvalConfig, evaluate
    from lakd.eval.results import format_summary

    if out is None:
        raise LakdError("--out: give the result file to write (e.g. --out results.json)")
    cfg = build_config(
        ctx,
        EvalConfig,
        {
            "model": model,
            "data": data_flags.spec(data),
            "embeddings": embeddings,
            "task": task,
            "out": str(out),
            "teacher": teacher,
            "teacher_embeddings": teacher_embeddings,
            "templates": str(templates) if templates else None,
            "batch_size": batch_size,
            "device": device,
            "arch": arch,
            "cache_dir": str(cache_dir) if cache_dir else None,
            "allow_nonfinite": allow_nonfinite,
            "source_options": data_flags.source_options,
            "dense": {
                key: value
                for key, value in {"head_width": head_width, "head_steps": head_steps, "head_data": head_data}.items()
                if value is not None
            },
        },
    )
    records = evaluate(cfg)
    typer.echo(format_summary(list(records.values())))
    typer.echo(f"results: {out}")


@eval_app.command("table")
def eval_table(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="lakd or clip_benchmark result JSON files.")],
    out: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
) -> None:
    """Merge lakd and clip_benchmark result files into one CSV table (one row per task result)."""
    from lakd.eval.results import write_table

    _note_command(ctx, None)
    table = write_table(files, out)
    typer.echo(f"wrote {len(table)} result row(s) from {len(files)} file(s) to {out}")


class _LevelPrefixFormatter(logging.Formatter):
    """``warning: message`` (lower-case level, like the ``error:`` lines)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {show_fields(record.getMessage())}"


# ---- whiten -------------------------------------------------------------------------------------

whiten_app = typer.Typer(
    help="Fit and apply whitening statistics of an embedding store.", no_args_is_help=True
)
app.add_typer(whiten_app, name="whiten")

Method = Annotated[str, typer.Option("--method", help="zca (symmetric) or pca.")]


@whiten_app.command("fit")
def whiten_fit(
    ctx: typer.Context,
    embeddings: Annotated[Path, typer.Option("--embeddings", help="Embedding store folder (lakd embed).")],
    out: Annotated[
        Path,
        typer.Option("--out", help="NAME.safetensors: writes NAME.image.safetensors, NAME.text.safetensors."),
    ],
    modality: Annotated[
        list[str] | None, typer.Option("--modality", help="image and/or text (repeatable; default both).")
    ] = None,
    method: Method = "zca",
    eps: Annotated[
        float, typer.Option("--eps", min=0.0, help="Ridge, relative to the mean eigenvalue.")
    ] = 1e-6,
    shrinkage: Annotated[
        str | None, typer.Option("--shrinkage", help="ledoit_wolf or oas (scikit-learn), default none.")
    ] = None,
    rank: Annotated[int | None, typer.Option("--rank", min=1, help="Keep the top RANK axes.")] = None,
    allow_nonfinite: Annotated[
        bool, typer.Option("--allow-nonfinite", help="Drop NaN/Inf rows (with a count) instead of failing.")
    ] = False,
) -> None:
    """Fit per-modality whitening statistics (float64, eigh) on an embedding store."""
    from lakd.data.store.whitening import MODALITIES, WhitenFitConfig, fit_store_whitening

    cfg = build_config(
        ctx,
        WhitenFitConfig,
        {
            "embeddings": str(embeddings),
            "out": str(out),
            "modalities": list(modality or MODALITIES),
            "method": method,
            "eps": eps,
            "shrinkage": shrinkage,
            "rank": rank,
            "allow_nonfinite": allow_nonfinite,
        },
    )
    for name, path in fit_store_whitening(cfg).items():
        typer.echo(f"{name}: {path}")


@whiten_app.command("apply")
def whiten_apply(
    ctx: typer.Context,
    embeddings: Annotated[Path, typer.Option("--embeddings", help="Embedding store to whiten.")],
    stats: Annotated[
        Path, typer.Option("--stats", help="NAME.safetensors given to `lakd whiten fit --out`.")
    ],
    out: Annotated[Path, typer.Option("--out", help="New embedding store with whitened embeddings.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    allow_nonfinite: Annotated[
        bool, typer.Option("--allow-nonfinite", help="Drop NaN/Inf rows (with a count) instead of failing.")
    ] = False,
) -> None:
    """Write a whitened copy of an embedding store, y = (x - mu) W per modality."""
    from lakd.data.store.whitening import WhitenApplyConfig, apply_store_whitening

    cfg = build_config(
        ctx,
        WhitenApplyConfig,
        {
            "embeddings": str(embeddings),
            "stats": str(stats),
            "out": str(out),
            "overwrite": overwrite,
            "allow_nonfinite": allow_nonfinite,
        },
    )
    store = apply_store_whitening(cfg)
    typer.echo(f"wrote {store.n_items} items / {store.n_texts} captions, whitened, to {out}")


# ---- geometry -----------------------------------------------------------------------------------

geometry_app = typer.Typer(help="Geometry diagnostics of CLIP embedding spaces.", no_args_is_help=True)
app.add_typer(geometry_app, name="geometry")

ModelList = Annotated[
    list[str] | None,
    typer.Option("--model", help="Model spec or embedding store (repeatable; the first is the reference)."),
]


@geometry_app.command("report")
@data_options
def geometry_report_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Report folder to write.")],
    model: ModelList = None,
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="Reference model spec or embedding store.")
    ] = None,
    student: Annotated[
        list[str] | None, typer.Option("--student", help="Student model spec or store (repeatable).")
    ] = None,
    embeddings: Annotated[
        list[str] | None,
        typer.Option("--embeddings", help="Embedding store instead of a model (repeatable)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Data the models are embedded on (default shapes:val; with --run its eval.data)."),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace a previous lakd report at --out (never any other folder)."),
    ] = False,
    sample_size: Annotated[
        int, typer.Option("--sample-size", min=2, help="Rows per modality sampled by the analysis.")
    ] = 2000,
    tsne_items: Annotated[
        int, typer.Option("--tsne-items", min=2, help="Items per modality in t-SNE.")
    ] = 300,
    text_view: Annotated[
        str, typer.Option("--text-view", help="paired (each item's first caption) or all (every caption).")
    ] = "paired",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of every sample and of t-SNE.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")] = "cpu",
    run: Annotated[
        str | None,
        typer.Option("--run", help="A lakd train run folder: its teacher vs its checkpoints, on its eval.data."),
    ] = None,
    checkpoints: Annotated[
        str | None,
        typer.Option("--checkpoints", help="With --run: all, or steps such as 100,300 (default: first, middle, last)."),
    ] = None,
    allow_nonfinite: Annotated[
        bool,
        typer.Option("--allow-nonfinite", help="Drop NaN/Inf rows of the stores (with a count) instead of failing."),
    ] = False,
    cache_dir: Annotated[
        str | None,
        typer.Option("--cache-dir", help="Cache the models' embeddings here, across reports (default: OUT/embeddings)."),
    ] = None,
    data_flags: DataFlags | None = None,
) -> None:
    """Geometry report of one or more models, or of a training run's checkpoints (--run): report.html,
    figures/*.png, metrics.json, metrics.csv."""
    from lakd.report import ReportConfig, geometry_report, report_summary

    cfg = build_config(
        ctx,
        ReportConfig,
        {
            "out": str(out),
            "models": list(model or ()),
            "teacher": teacher,
            "students": list(student or ()),
            "embeddings": list(embeddings or ()),
            "data": data_flags.spec(data),
            "overwrite": overwrite,
            "sample_size": sample_size,
            "tsne_items": tsne_items,
            "text_view": text_view,
            "seed": seed,
            "batch_size": batch_size,
            "device": device,
            "allow_nonfinite": allow_nonfinite,
            "run": run,
            "checkpoints": checkpoints,
            "source_options": data_flags.source_options,
            "cache_dir": cache_dir,
        },
    )
    typer.echo(report_summary(geometry_report(cfg)))


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record comes (so a test's
    captured stderr, or a redirected one, gets the lines)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _configure_logging(debug: bool) -> None:
    """Library log lines (skipped images, truncated captions, ...) as ``warning: ...`` on stderr.
    While a command runs, lakd's records do not also reach the root logger (:func:`main`), which
    open_clip's module-level ``logging.warning`` calls may have given a handler of its own
    (``WARNING:lakd...:`` lines). The root logger gets the same ``warning: ...`` handler when it has
    none, so another library's warning is one line in the same form and never triggers
    ``logging.basicConfig``."""

    logger = logging.getLogger("lakd")
    if not any(getattr(h, "_lakd_cli", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler._lakd_cli = True  # type: ignore[attr-defined]
        handler.setFormatter(_LevelPrefixFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    root = logging.getLogger()
    if not root.handlers:
        handler = _StderrHandler()
        handler._lakd_cli = True  # type: ignore[attr-defined]
        handler.setLevel(logging.WARNING)
        handler.setFormatter(_LevelPrefixFormatter())
        root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lakd`` script; returns the exit status (callable from tests)."""
    global _running
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _configure_logging(debug)
    command = typer.main.get_command(app)
    _running = None
    lakd_logger = logging.getLogger("lakd")
    propagate, lakd_logger.propagate = lakd_logger.propagate, False  # printed once, by its own handler
    try:
        command.main(args=args, prog_name="lakd", standalone_mode=True)
    except SystemExit as exit_:  # click's own exit: help, usage errors, normal completion
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except (LakdError, OSError) as err:  # OSError: unwritable output folder, full disk, ...
        if debug:
            raise
        typer.echo(f"error: {show_fields(_one_line(err))}", err=True)
        return 1
    finally:
        _running = None
        lakd_logger.propagate = propagate
    return 0


def _one_line(err: Exception) -> str:
    """The message of a LakdError, or ``<file>: <reason>`` for an operating-system error."""
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    return " ".join(str(err).split())
