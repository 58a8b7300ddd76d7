"""``lakd geometry report``: models or embedding stores in, one report folder out.

:func:`geometry_report` checks every input cheaply (model specs, stores, data source, item counts,
output folder), then builds the report in a temporary folder beside ``out`` and renames it into
place (:func:`lakd.io.atomic_dir`): models are embedded into ``embeddings/`` (reused from a previous
report at ``out`` when overwriting), each model is analysed (:func:`lakd.analysis.analyze`; against
the reference, i.e. the teacher or the first entry, for the alignment metrics), and the folder gets
``metrics.json`` (source of truth), ``metrics.csv``, ``figures/*.png`` and ``report.html``. With
``run``, the entries are a training run's teacher and checkpoints (:mod:`lakd.report.run`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lakd import __version__
from lakd.analysis.analyze import AnalysisConfig, analyze
from lakd.data import SourceOptions
from lakd.data.store import EmbeddingStore
from lakd.errors import LakdError
from lakd.io import atomic_dir, atomic_path, write_json, write_text
from lakd.report.dense import PROBES as DENSE_PROBES
from lakd.report.dense import dense_examples
from lakd.report.diagnosis import diagnose
from lakd.report.figures import save_figures
from lakd.report.html import render_page
from lakd.report.inputs import (
    CACHE_DIR,
    MODALITIES,
    REPORT_FORMAT,
    TEXT_VIEWS,
    ModelInput,
    check_output,
    chunk_sources,
    input_paths,
    make_inputs,
    open_stores,
    resolve_inputs,
    reuse_cache,
    row_labels,
)
from lakd.report.points import ReportData, modality_view, model_data
from lakd.report.run import run_entries
from lakd.report.table import legend_text, metrics_frame, summary_rows, terminal_summary
from lakd.report.views import figure_views

TEXT_VIEW_DESCRIPTIONS = {"paired": "each item's first caption", "all": "every caption"}


@dataclass
class ReportConfig:
    """Arguments of :func:`geometry_report` (the CLI's ``lakd geometry report`` options).

    Entries (each a model spec or an embedding-store folder): ``teacher``, then ``models``,
    ``embeddings`` (stores only) and ``students``; the first entry is the reference. ``data``: what
    the models are embedded on (default ``shapes:val``; with stores only, optional and used to check
    their item count). ``sample_size``: rows per modality the analysis samples; ``plot_points``: rows
    drawn in scatter plots; ``tsne_items``: rows per modality in the t-SNE; ``similarity_items``:
    images in the similarity matrices. ``text_view``: ``paired`` (each item's first caption) or
    ``all`` (every caption). ``allow_nonfinite``: drop NaN/Inf rows of the stores (with a count; the
    stores must still hold the same items) instead of failing. ``analysis``: full analysis settings
    (default: from sample_size, seed). ``cache_dir``: where the models' embeddings are cached (keyed
    by model files and data, :func:`lakd.models.embed.cached_embed`; shared by reports and ``lakd
    eval --cache-dir``); None: the report's own ``embeddings/`` folder.

    ``run``: a ``lakd train`` run folder instead of ``models`` / ``students`` / ``embeddings``: its
    teacher (``teacher`` when given, else the run's ``teacher.model``, else its ``teacher.eval_store``;
    without one the first checkpoint is the reference) and its checkpoints ``checkpoints`` (None: the
    first, middle and last; ``all``; or steps ``100,300``), named ``step N``, on ``data`` (default: the
    run's ``eval.data``).
    """

    out: str
    models: tuple[str, ...] = ()
    teacher: str | None = None
    students: tuple[str, ...] = ()
    embeddings: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    data: str | None = None
    overwrite: bool = False
    sample_size: int = 2000
    plot_points: int = 1000
    tsne_items: int = 300
    similarity_items: int = 40
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"
    text_view: str = "paired"
    chunk_size: int = 8192
    run: str | None = None
    checkpoints: str | None = None
    allow_nonfinite: bool = False
    source_options: SourceOptions = field(default_factory=SourceOptions)
    analysis: AnalysisConfig | None = None
    cache_dir: str | None = None

    def validate(self) -> ReportConfig:
        for name, least in (
            ("sample_size", 2),
            ("plot_points", 2),
            ("tsne_items", 2),
            ("similarity_items", 2),
            ("batch_size", 1),
            ("chunk_size", 1),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise LakdError(f"{name}: must be an integer >= {least}, got {value!r}")
        if self.text_view not in TEXT_VIEWS:
            raise LakdError(f"text_view: unknown {self.text_view!r} (choose from {', '.join(TEXT_VIEWS)})")
        if not self.out:
            raise LakdError("out: give the report folder to write")
        if self.checkpoints is not None and not self.run:
            raise LakdError("checkpoints: only used with `run`")
        if self.run and (self.models or self.students or self.embeddings or self.names):
            raise LakdError(
                "run: compares the run's teacher and checkpoints (named step N); give no `models`, `students`, "
                "`embeddings` or `names`"
            )
        self.analysis_config().validate()
        return self

    def analysis_config(self) -> AnalysisConfig:
        return self.analysis or AnalysisConfig(
            sample_size=self.sample_size, seed=self.seed, chunk_size=self.chunk_size
        )


def geometry_report(cfg: ReportConfig) -> Path:
    """Write the report folder ``cfg.out`` and return its path (see the module doc).

    Raises LakdError before any embedding or analysis for a missing model file, an unknown data
    source, a store whose items differ from the others' or from the data's, an output folder that
    exists (without ``overwrite``), is not a lakd report, is or contains the working folder or an
    input, or cannot be written. ``out`` is resolved first; the returned path is the resolved one.
    """
    cfg.validate()
    out = Path(cfg.out).resolve()
    run, data = None, cfg.data
    if cfg.run:
        entries = run_entries(cfg.run, cfg.checkpoints, cfg.data, cfg.teacher)
        inputs, data, run = entries.inputs, entries.data, entries.description
    else:
        inputs = make_inputs(cfg.teacher, cfg.models, cfg.embeddings, cfg.students, cfg.names)
    shared = Path(cfg.cache_dir).resolve() if cfg.cache_dir else None
    if shared is not None and shared.is_relative_to(out):
        raise LakdError(f"`cache_dir` {shared}: is inside `out` {out}, which the report replaces; keep the cache elsewhere")
    check_output(out, cfg.overwrite, input_paths(inputs, data, cfg.source_options))
    data, stores = resolve_inputs(inputs, data, cfg.source_options, allow_nonfinite=cfg.allow_nonfinite)
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        cache = shared or tmp / CACHE_DIR
        if data is not None and shared is None:
            reuse_cache(inputs, data, cfg.source_options, out / CACHE_DIR, cache)
        opened = open_stores(
            inputs,
            stores,
            data,
            cache,
            options=cfg.source_options,
            batch_size=cfg.batch_size,
            device=cfg.device,
            allow_nonfinite=cfg.allow_nonfinite,
        )
        write_report(assemble(cfg, inputs, opened, data, root=tmp, run=run), tmp)
    return out


def embed_ahead(cfg: ReportConfig, model: str) -> None:
    """Embed ``model`` on ``cfg.data`` into ``cfg.cache_dir`` as :func:`geometry_report` with
    ``cfg`` will look it up, ahead of the report (e.g. in a worker process while others train)."""
    from lakd.models.embed import cached_embed  # imports open_clip: only when a model runs

    if not (cfg.cache_dir and cfg.data):
        raise LakdError("`cache_dir` and `data`: embedding ahead of a report needs both")
    cached_embed(
        model,
        cfg.data,
        cfg.cache_dir,
        source_options=cfg.source_options,
        batch_size=cfg.batch_size,
        device=cfg.device,
        allow_nonfinite=cfg.allow_nonfinite,
    )


def write_report(report: ReportData, folder: Path) -> None:
    """``figures/*.png``, ``metrics.json``, ``metrics.csv`` and ``report.html`` of ``report`` into ``folder``."""
    meta = report.meta
    views = figure_views(report)  # one view per figure, drawn by both renderers
    meta["figures"] = [str(path.relative_to(folder)) for path in save_figures(views, folder / "figures")]
    write_json(folder / "metrics.json", meta)
    roles = {model["name"]: model["role"] for model in meta["models"]}
    with atomic_path(folder / "metrics.csv") as path:
        metrics_frame(meta["results"], roles).to_csv(path, index=False)
    write_text(folder / "report.html", render_page(report, views))


def assemble(
    cfg: ReportConfig,
    inputs: list[ModelInput],
    stores: dict[str, EmbeddingStore],
    data: str | None,
    root: Path,
    run: dict | None = None,
) -> ReportData:
    """Analyse every store, sample its rows for the figures, and describe the report (store paths
    inside the report folder ``root`` are recorded relative to it; ``run``: the training run the
    entries come from)."""
    config = cfg.analysis_config()
    sources = {name: chunk_sources(store, cfg.text_view, cfg.chunk_size) for name, store in stores.items()}
    reference = inputs[0].name
    models, results = [], {}
    for index, entry in enumerate(inputs):
        own = sources[entry.name]
        try:
            result = analyze(own, reference=None if index == 0 else sources[reference], config=config)
        except LakdError as err:  # name the input as given: analysis errors only know the metric
            raise LakdError(f"{entry.name} ({entry.spec}): {err}") from None
        results[entry.name] = result.to_dict()
        views = {
            modality: modality_view(
                own[modality],
                f"{entry.name} {modality}",
                sample_size=cfg.plot_points,
                seed=cfg.seed,
                chunk_size=cfg.chunk_size,
            )
            for modality in MODALITIES
        }
        models.append(
            model_data(
                entry,
                index,
                results[entry.name],
                views,
                tsne_items=cfg.tsne_items,
                similarity_items=cfg.similarity_items,
                seed=cfg.seed,
            )
        )
    dims = {model.name: model.dim for model in models}
    first = stores[reference]
    meta = {
        "format": REPORT_FORMAT,
        "lakd_version": __version__,
        "data": data,
        "run": run,
        "source_options": asdict(cfg.source_options),
        "n_items": first.n_items,
        "text_view": cfg.text_view,
        "text_view_description": TEXT_VIEW_DESCRIPTIONS[cfg.text_view],
        "text_rows": models[0].views["text"].n,
        "reference": reference,
        "models": [describe_model(entry, stores[entry.name], root) for entry in inputs],
        "sampling": {
            "seed": cfg.seed,
            "analysis_sample_size": config.sample_size,
            "plot_points": cfg.plot_points,
            "tsne_items": cfg.tsne_items,
            "similarity_items": cfg.similarity_items,
        },
        "analysis_config": config.to_dict(),
        "alignment": alignment_description(dims, reference, config),
        "verdict_rule": legend_text([entry.name for entry in inputs]),
        "summary": summary_rows(results, dims),
        "figures": [],
        "results": results,
    }
    if len(inputs) > 1:
        recipes = {entry.name: recipe_of(entry) for entry in inputs}
        meta["diagnosis"] = diagnose(results, reference, recipes)
    dense = dense_examples(inputs, cfg.device)
    meta["dense_maps"] = {"probes": DENSE_PROBES, "skipped": dense.reason or None}
    labels = row_labels(first, cfg.text_view)
    return ReportData(models=models, labels=labels, meta=meta, dense=dense)


def describe_model(entry: ModelInput, store: EmbeddingStore, root: Path) -> dict:
    path = store.path.relative_to(root) if store.path.is_relative_to(root) else store.path
    return {
        "name": entry.name,
        "role": entry.role,
        "spec": entry.spec,
        "kind": entry.kind,
        "model": store.meta.get("model"),
        "source": store.meta.get("source"),
        "embeddings": str(path),
        "dims": {"image": store.dim("image"), "text": store.dim("text")},
        "dropped_nonfinite": {"items": store.n_dropped_items, "texts": store.n_dropped_texts},
        "recipe": recipe_of(entry),
    }


def recipe_of(entry: ModelInput) -> Any:
    """The recipe a model was trained with, as its lakd checkpoint records it (None when unknown)."""
    if entry.kind != "model" or Path(entry.spec).suffix.lower() not in (".pt", ".safetensors"):
        return None
    from lakd.models.safe_load import read_checkpoint

    try:
        _, meta = read_checkpoint(Path(entry.spec))
    except LakdError:
        return None
    train = (meta.get("lakd") or {}).get("train") if isinstance(meta.get("lakd"), dict) else None
    return train.get("recipe") if isinstance(train, dict) else None


def alignment_description(dims: dict[str, int], reference: str, config: AnalysisConfig) -> dict:
    """Which alignment metrics the report computes and how it handles differing dimensions."""
    others = [name for name in dims if name != reference]
    differing = [name for name in others if dims[name] != dims[reference]]
    if not others:
        note = "One model: geometry diagnostics only; no alignment metrics."
    else:
        note = (
            f"Alignment with {reference} on the same {config.sample_size} sampled items (at most): linear CKA, "
            f"mutual {config.knn_k}-NN overlap (cosine), Spearman correlation of cosine-similarity matrices "
            f"({config.spearman_sample_size} items), top-1 retrieval agreement and the orthogonal Procrustes "
            "residual after centring and scaling."
        )
    if differing:
        sizes = ", ".join(f"{name}: {dims[name]}" for name in [reference, *differing])
        note += (
            f" Dimensions differ ({sizes}): models are compared on dimension-free metrics (effective rank and "
            "anisotropy get no delta); CKA, k-NN overlap, similarity Spearman and retrieval agreement need no "
            "shared space, and Procrustes maps the smaller space into the larger by a semi-orthogonal "
            "projection (zero padding), with no learned map."
        )
    return {
        "metrics": [
            "linear_cka",
            "knn_overlap",
            "similarity_spearman",
            "retrieval_agreement",
            "procrustes_residual",
        ]
        if others
        else [],
        "dims": dims,
        "dims_differ": bool(differing),
        "note": note,
    }


def report_summary(out: str | Path) -> str:
    """The terminal summary of a finished report folder (read from its metrics.json)."""
    out = Path(out)
    try:
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LakdError(f"{out / 'metrics.json'}: cannot read the report's metrics ({err})") from None
    return terminal_summary(metrics, str(out / "report.html"))
