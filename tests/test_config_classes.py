"""Every config dataclass of lakd loads through the one strict loader (``lakd.config.from_mapping``)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import pytest

import lakd
from lakd.analysis import AnalysisConfig
from lakd.config import dump_yaml, from_mapping, load_config, to_mapping
from lakd.data.base import SourceOptions
from lakd.data.store.whitening import WhitenApplyConfig, WhitenFitConfig
from lakd.demo import DemoConfig
from lakd.errors import LakdError
from lakd.eval import EvalConfig
from lakd.eval.dense import DenseOptions
from lakd.models.embed import EmbedConfig
from lakd.report import ReportConfig
from lakd.train.config import (
    CheckpointConfig,
    DataConfig,
    OptimConfig,
    PrecisionConfig,
    ScheduleConfig,
    StudentConfig,
    TeacherConfig,
    TrackConfig,
    TrainConfig,
)
from lakd.train.config import EvalConfig as TrainEvalConfig

# one instance of each, every field away from its default where it has one
INSTANCES = [
    SourceOptions(download=True, allow_outside_root=True, max_image_bytes=1024),
    EmbedConfig(
        model="lakd:tiny-vit",
        data="captions.csv?root=images",
        out="emb/tiny",
        batch_size=8,
        device="cuda:1",
        shard_size=100,
        dtype="float16",
        num_workers=2,
        allow_nonfinite=True,
        overwrite=True,
        arch="ViT-B-32",
        source_options=SourceOptions(download=True),
    ),
    EvalConfig(
        model="lakd:tiny-vit",
        data="shapes:val",
        task="zeroshot",
        out="runs/{task}.json",
        teacher="lakd:tiny-resnet",
        templates="templates.txt",
        batch_size=16,
        device="cuda:0",
        arch="ViT-B-16",
        cache_dir="cache",
        source_options=SourceOptions(allow_outside_root=True),
        dense=DenseOptions(
            head_width=16, head_steps=20, head_batch=8, head_lr=3e-3, head_data="shapes:probes?n=64&seed=2", head_seed=1
        ),
    ),
    EvalConfig(embeddings="emb/tiny", teacher_embeddings="emb/teacher", task="retrieval", allow_nonfinite=True),
    AnalysisConfig(
        groups=("ellipsoid", "shell"),
        sample_size=100,
        seed=3,
        chunk_size=64,
        whitening_method="pca",
        whitening_eps=1e-4,
        whitening_shrinkage="oas",
        whitening_rank=4,
        knn_k=5,
        spearman_sample_size=50,
        separability_folds=3,
        separability_max_coordinates=2,
        histogram_bins=20,
        qq_coordinates=2,
        cross_modal=(("image", "text"), ("text", "image")),
    ),
    ReportConfig(
        out="reports/tiny",
        models=("lakd:tiny-vit", "emb/a"),
        teacher="lakd:tiny-resnet",
        students=("s1.pt", "s2.pt"),
        embeddings=("emb/b",),
        names=("teacher", "vit", "a", "b", "s1", "s2"),
        data="shapes:val?n=80",
        overwrite=True,
        sample_size=100,
        plot_points=50,
        tsne_items=30,
        similarity_items=10,
        seed=2,
        batch_size=8,
        device="cuda",
        text_view="all",
        chunk_size=128,
        allow_nonfinite=True,
        source_options=SourceOptions(download=True),
        analysis=AnalysisConfig(groups=("gap",), sample_size=10),
    ),
    ReportConfig(out="reports/run", run="runs/s", checkpoints="100,300", cache_dir="emb/cache"),
    WhitenFitConfig(
        embeddings="emb/tiny",
        out="emb/w.safetensors",
        modalities=("text",),
        method="pca",
        eps=1e-3,
        shrinkage="ledoit_wolf",
        rank=8,
        chunk_size=512,
        allow_nonfinite=True,
    ),
    WhitenApplyConfig(embeddings="emb/tiny", stats="emb/w.safetensors", out="emb/white", overwrite=True, allow_nonfinite=True),
    DemoConfig(out="demo", cache_dir="cache", recipes=("fd", "geometry"), quick=True, seed=1, device="cuda", jobs=2),
    TrainConfig(
        data=DataConfig(
            train="captions.csv?root=images",
            batch_size=32,
            workers=2,
            caption="first",
            augment="crop",
            cache=True,
            download=True,
            allow_outside_root=True,
        ),
        student=StudentConfig(model="student.pt", arch="ViT-B-32", mask_ratio=0.75),
        teacher=TeacherConfig(
            kind="cached",
            store="emb/teacher",
            model="lakd:tiny-vit",
            arch="ViT-B-16",
            logit_scale=50.0,
            whitening="emb/w.safetensors",
            eval_store="emb/teacher-val",
        ),
        recipe={"clip": 1.0, "whitened_fd": {"weight": 2.0, "stats": "emb/w.safetensors"}},
        optim=OptimConfig(lr=3e-4, weight_decay=0.1, betas=(0.8, 0.9), eps=1e-8, accum=2, grad_clip=None),
        schedule=ScheduleConfig(steps=50, warmup=5, kind="constant", min_lr_ratio=0.1),
        precision=PrecisionConfig(amp="bf16", compile=True, threads=2),
        eval=TrainEvalConfig(
            data="shapes:val?n=64", probes=None, extra={"cifar10": "tv:CIFAR10?root=data"}, every=10, batch_size=32
        ),
        track=TrackConfig(geometry=False, groups=("shell", "gap"), sample_size=100, reference_cache="refs"),
        checkpoint=CheckpointConfig(every=10, keep_last=1, best_metric=None, best_mode="min"),
        out="runs/a",
        seed=3,
        log_every=2,
        on_nan="skip",
        device="cuda:1",
    ),
    TeacherConfig(kind="online", model="lakd:tiny-resnet"),
]


def _config_classes() -> set[type]:
    """Every dataclass named ``*Config`` in a lakd module, and ``SourceOptions`` (a config section)."""
    found = {SourceOptions}
    for module in pkgutil.walk_packages(lakd.__path__, "lakd."):
        if module.name == "lakd.__main__":
            continue
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__name__.endswith("Config"):
                found.add(value)
    return found


def _non_default_fields(obj) -> set[str]:
    """Fields of ``obj`` that are required or hold a value other than their default."""
    names = set()
    for f in dataclasses.fields(obj):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            names.add(f.name)
            continue
        if getattr(obj, f.name) != default:
            names.add(f.name)
    return names


@pytest.mark.parametrize("obj", INSTANCES, ids=lambda obj: type(obj).__name__)
def test_config_round_trips_through_the_strict_loader(obj, tmp_path):
    data = to_mapping(obj)
    assert from_mapping(type(obj), data) == obj
    dump_yaml(obj, tmp_path / "config.yaml")
    assert load_config(type(obj), tmp_path / "config.yaml") == obj


def _with_sections(obj) -> list:
    """``obj`` and every dataclass instance inside it (its sections, their sections, ...)."""
    found = [obj]
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found += _with_sections(value)
    return found


def test_every_config_class_has_an_instance_with_every_field_set():
    classes = _config_classes()
    instances = [inner for obj in INSTANCES for inner in _with_sections(obj)]
    missing = classes - {type(obj) for obj in instances}
    assert not missing, f"no instance of {sorted(f'{c.__module__}.{c.__name__}' for c in missing)}"
    for cls in classes:
        fields = {f.name for f in dataclasses.fields(cls)}
        covered = set().union(*(_non_default_fields(obj) for obj in instances if type(obj) is cls))
        assert fields <= covered, f"{cls.__module__}.{cls.__name__}: no instance sets {sorted(fields - covered)}"


@pytest.mark.parametrize(
    "cls, data, error",
    [
        (EmbedConfig, {"model": "m", "data": "d", "out": "o", "batch_size": "8"}, "batch_size: expected an integer, got '8'"),
        (EmbedConfig, {"model": "m", "data": "d"}, "missing key 'out'"),
        (ReportConfig, {"out": "r", "studnets": ["a"]}, "unknown key 'studnets' (did you mean 'students'?)"),
        (WhitenFitConfig, {"embeddings": "e", "out": "o", "modalities": "text"}, "modalities: expected a list, got 'text'"),
        (EvalConfig, {"source_options": {"download": "yes"}}, "source_options.download: expected true or false, got 'yes'"),
    ],
)
def test_config_type_errors_name_the_dotted_key(cls, data, error):
    with pytest.raises(LakdError) as err:
        from_mapping(cls, data, source="lakd test")
    assert str(err.value) == f"lakd test: {error}"
