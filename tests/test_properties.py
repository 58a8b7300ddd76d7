"""Property-based tests (hypothesis): whatever the input, lakd's parsers and readers return a result
or raise a one-line LakdError, never another exception; the metrics keep their invariances (rotation
for CKA and Procrustes, a permutation of the items, the scale of cosine metrics).

Every test bounds its number of examples (``settings``: 100, or half that for the store reader, and
no deadline per example, which a busy machine would turn into failures); all of them together take
about half a minute on two busy cores."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import string
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from lakd.analysis.alignment import (
    knn_overlap,
    linear_cka,
    procrustes_residual,
    retrieval_agreement,
    similarity_spearman,
)
from lakd.analysis.conformity import conformity, cross_conformity
from lakd.config import apply_overrides, from_mapping, load_config
from lakd.data import Item, Skipped, SourceOptions, open_source
from lakd.data.sources import DataSpec
from lakd.data.store import EmbeddingStore, write_store
from lakd.data.store.whitening import WhitenFitConfig
from lakd.errors import LakdError
from lakd.eval import EvalConfig
from lakd.models.embed import EmbedConfig
from lakd.report import ReportConfig

# examples per test: 100 by default (deterministic, so a run is repeatable); a longer search, with
# fresh random examples: LAKD_PROPERTY_EXAMPLES=3000 python -m pytest tests/test_properties.py
EXAMPLES = int(os.environ.get("LAKD_PROPERTY_EXAMPLES", "100"))
DEFAULT = "LAKD_PROPERTY_EXAMPLES" not in os.environ
FAST = settings(
    max_examples=EXAMPLES,
    deadline=None,  # time per example varies on a busy machine; the example counts bound the run
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=DEFAULT,
)
SLOW = settings(FAST, max_examples=max(1, EXAMPLES // 2))


@contextmanager
def folder():
    """A fresh temporary folder that is also the working folder (relative specs stay inside it)."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as name:
        os.chdir(name)
        try:
            yield Path(name)
        finally:
            os.chdir(before)


def result_or_lakd_error(fn, *args, **kwargs):
    """``fn(*args)``, or None when it raises a LakdError (one line); any other exception fails."""
    try:
        return fn(*args, **kwargs)
    except LakdError as err:
        assert "\n" not in str(err) and str(err), repr(err)
        return None


def read_all(source, limit: int = 6) -> None:
    """Index the first items: each is an Item or a Skipped, never an exception."""
    for i in range(min(len(source), limit)):
        item = source[i]
        assert isinstance(item, Item | Skipped), item
        if isinstance(item, Item):
            assert isinstance(item.id, str) and all(isinstance(c, str) for c in item.captions)
            # a label is a class index, stored as int64 beside the embeddings
            assert item.label is None or (isinstance(item.label, int) and 0 <= item.label < 2**31), item.label


def png(size: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


# ---- data specs ------------------------------------------------------------------------------------

SPEC_TEXT = st.text(alphabet=string.ascii_letters + string.digits + ":?&=/.{},*_-%+ \x00é", max_size=40)
SHAPES_SPEC = st.builds(
    lambda split, options: f"shapes:{split}" + ("?" + "&".join(f"{k}={v}" for k, v in options) if options else ""),
    st.sampled_from(["train", "val", "test", "probes", "nope", ""]),
    st.lists(
        st.tuples(
            st.sampled_from(["n", "seed", "image_size", "max_objects", "noise", "k", "x"]),
            st.one_of(
                st.integers(-3, 10**12).map(str),
                st.sampled_from(["", "yes", "1.5", "0x10", " 4", "٣", "9" * 30]),
            ),
        ),
        max_size=4,
    ),
)
ANY_SPEC = st.one_of(
    SPEC_TEXT,
    SHAPES_SPEC,
    st.builds(lambda rest: "wds:" + rest, SPEC_TEXT),
    st.builds(lambda name, rest: f"tv:{name}{rest}", st.sampled_from(["CIFAR10", "FakeData", "Nope", ""]), SPEC_TEXT),
)


@FAST
@given(ANY_SPEC)
def test_data_spec_parse_takes_any_string(text):
    spec = DataSpec.parse(text)
    assert str(spec) == text and isinstance(spec.target, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in spec.query.items())


@FAST
@given(ANY_SPEC, st.booleans())
def test_open_source_gives_a_source_or_a_lakd_error(text, allow_outside_root):
    with folder():
        source = result_or_lakd_error(open_source, text, SourceOptions(allow_outside_root=allow_outside_root))
        if source is not None:
            assert len(source) >= 1
            if text.startswith("shapes:"):
                read_all(source, limit=1)


# ---- CSV ------------------------------------------------------------------------------------------

NAME_CELL = st.sampled_from(["a.png", "b.png", "../x.png", "/etc/passwd", "missing.png", "sub/c.png", "", " "])
CELL = st.one_of(NAME_CELL, st.text(alphabet=string.printable + "é\x00", max_size=12))
CSV_ROWS = st.lists(
    st.one_of(
        st.tuples(NAME_CELL, st.text(alphabet=string.ascii_letters + " ", min_size=1, max_size=10)).map(list),
        st.lists(CELL, min_size=1, max_size=4),
    ),
    max_size=6,
)
HEADER = st.one_of(
    st.sampled_from([["filepath", "title"], ["title", "filepath", "extra"], ["x", "y"], ["filepath", "title", "filepath"]]),
    st.lists(st.text(alphabet=string.ascii_letters + ",;\t ", max_size=8), max_size=3),
)
SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon"}


@FAST
@given(
    HEADER,
    CSV_ROWS,
    st.sampled_from(list(SEPARATORS)),
    st.sampled_from(["same", "named", "same", "other"]),  # the separator of the header, and the sep= option
    st.one_of(st.none(), st.none(), st.binary(max_size=20)),
    st.dictionaries(
        st.sampled_from(["img_key", "caption_key", "root", "bogus"]),
        st.sampled_from(["", "x", "title", "filepath", "."]),
        max_size=2,
    ).filter(lambda query: len(query) < 2 or "bogus" not in query),
)
@example(["filepath", "title"], [["a.png", "ok"], ["b.png", "broken"], ["sub/c.png", "/dev/zero"]], ",", "same", None, {})
def test_csv_reader_gives_items_or_a_lakd_error(header, rows, sep, how, tail, query):
    with folder() as root:
        (root / "a.png").write_bytes(png())
        (root / "b.png").write_bytes(b"\x89PNG broken")
        (root / "sub").mkdir()
        (root / "sub" / "c.png").symlink_to("/dev/zero")
        header_sep = "," if how == "other" and sep != "," else ";" if how == "other" else sep
        text = header_sep.join(header) + "\n" + "\n".join(sep.join(row) for row in rows) + "\n"
        (root / "c.csv").write_bytes(text.encode("utf-8", "surrogatepass") + (tail or b""))
        if how == "named":
            query = {**query, "sep": SEPARATORS[sep]}
        spec = "c.csv" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
        source = result_or_lakd_error(open_source, spec)
        if source is not None:
            read_all(source)


# ---- COCO -----------------------------------------------------------------------------------------

JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=8)
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10,
)
IMAGE_ID = st.one_of(st.integers(0, 3), st.sampled_from(["0", "1", "01", "a"]), JSON_SCALAR)
COCO_DOC = st.fixed_dictionaries(
    {
        "images": st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {"id": IMAGE_ID, "file_name": st.one_of(st.sampled_from(["a.png", "b.png", "../a.png", "/dev/zero", "no.png"]), JSON_SCALAR)}
                ),
                JSON_VALUE,
            ),
            max_size=4,
        ),
        "annotations": st.lists(
            st.one_of(
                st.fixed_dictionaries({"image_id": IMAGE_ID, "caption": st.one_of(st.text(max_size=10), JSON_SCALAR)}),
                JSON_VALUE,
            ),
            max_size=5,
        ),
    }
)


@st.composite
def well_formed_coco(draw):
    """A COCO document whose annotations mostly name its images (ids from one small set: 1 and "1"
    are one image, so both in ``images`` is a duplicate)."""
    unique = draw(st.integers(0, 3)) > 0
    ids = draw(st.lists(st.sampled_from([0, 1, 2, "1", "2", "a"]), min_size=1, max_size=4, unique_by=str if unique else None))
    names = st.sampled_from(["a.png", "b.png", "../a.png", "/dev/zero", "no.png"])
    images = [{"id": image_id, "file_name": draw(names)} for image_id in ids]
    stray = draw(st.integers(0, 4)) == 0  # an annotation of an image that is not there
    referenced = st.sampled_from([*ids, 7] if stray else ids)
    caption = st.one_of(st.sampled_from(["a red square", "two circles"]), st.text(max_size=10))
    annotations = draw(st.lists(st.fixed_dictionaries({"image_id": referenced, "caption": caption}), min_size=1, max_size=6))
    return {"images": images, "annotations": annotations}


@FAST
@given(st.one_of(well_formed_coco(), COCO_DOC, JSON_VALUE, st.binary(max_size=40)), st.booleans())
@example(
    {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": "2", "file_name": "b.png"}, {"id": 3, "file_name": "/dev/zero"}],
        "annotations": [{"image_id": "1", "caption": "x"}, {"image_id": 2, "caption": "y"}, {"image_id": 3, "caption": "z"}],
    },
    True,
)
def test_coco_reader_gives_items_or_a_lakd_error(document, allow_outside_root):
    with folder() as root:
        (root / "a.png").write_bytes(png())
        (root / "b.png").write_bytes(b"")
        data = document if isinstance(document, bytes) else json.dumps(document).encode()
        (root / "ann.json").write_bytes(data)
        source = result_or_lakd_error(open_source, "ann.json", SourceOptions(allow_outside_root=allow_outside_root))
        if source is not None:
            read_all(source)


# ---- webdataset -----------------------------------------------------------------------------------

MEMBER_NAME = st.builds(
    lambda key, ext: f"{key}.{ext}",
    st.sampled_from(["a", "b", "dir/c", "d.e", ".hidden", "x"]),
    st.sampled_from(["png", "jpg", "txt", "json", "cls", "seg.png", "PNG", "webp"]),
)
DEEP = st.sampled_from([1, 10, 100, 1_000, 10_000, 200_000])  # JSON nesting around Python's recursion limit
MEMBER_DATA = st.one_of(
    st.just(png()),
    st.binary(max_size=30),
    st.integers(-(10**30), 10**30).map(lambda n: str(n).encode()),
    JSON_VALUE.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda depth: b"[" * depth + b"]" * depth, DEEP),
    st.text(max_size=10).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
CAPTION_JSON = st.one_of(
    st.builds(lambda caption: json.dumps({"caption": caption}).encode(), st.one_of(st.text(max_size=8), JSON_VALUE)),
    st.builds(lambda depth: b'{"caption": ' + b"[" * depth + b"]" * depth + b"}", DEEP),
)
LABEL = st.one_of(
    st.integers(0, 9), st.integers(-(10**30), 10**30), st.sampled_from([2**31 - 1, 2**31, 2**63, 10**23])
).map(lambda n: str(n).encode())


@st.composite
def samples(draw):
    """Members of whole samples (an image with a caption, maybe a label), the form the reader expects."""
    members = {}
    for key in draw(st.lists(st.sampled_from(["a", "b", "dir/c"]), min_size=1, max_size=3, unique=True)):
        members[f"{key}.png"] = draw(st.sampled_from([png(), png(8), b"", b"\x89PNG broken"]))
        if draw(st.booleans()):
            members[f"{key}.txt"] = draw(st.text(max_size=10)).encode("utf-8", "surrogatepass")
        else:
            members[f"{key}.json"] = draw(CAPTION_JSON)
        if draw(st.booleans()):
            members[f"{key}.cls"] = draw(LABEL)
    return members


@FAST
@given(
    st.one_of(samples(), st.dictionaries(MEMBER_NAME, MEMBER_DATA, max_size=8)),
    st.one_of(st.none(), st.none(), st.binary(max_size=600)),
)
def test_webdataset_reader_gives_items_or_a_lakd_error(members, junk):
    with folder() as root:
        if junk is None:
            with tarfile.open(root / "s.tar", "w") as tar:
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        else:
            (root / "s.tar").write_bytes(junk)
        source = result_or_lakd_error(open_source, "wds:s.tar")
        if source is not None:
            read_all(source, limit=8)


# ---- the config loader ---------------------------------------------------------------------------

CONFIGS = [EmbedConfig, EvalConfig, ReportConfig, WhitenFitConfig]
KEYS = st.sampled_from(
    ["model", "data", "out", "batch_size", "source_options", "download", "max_image_bytes", "task", "groups",
     "modalities", "analysis", "sample_size", "seed", "overwrite", "eps", "bogus", "models"]
)
CONFIG_VALUE = st.recursive(
    st.one_of(JSON_SCALAR, st.integers(-(10**20), 10**20), st.floats()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=12,
)


REQUIRED = {  # a valid mapping of each config class, to start edits from
    EmbedConfig: {"model": "lakd:tiny-vit", "data": "shapes:val", "out": "e"},
    EvalConfig: {"embeddings": "e"},
    ReportConfig: {"out": "r", "embeddings": ["e"]},
    WhitenFitConfig: {"embeddings": "e", "out": "w.safetensors"},
}
FIELD_VALUE = st.one_of(
    CONFIG_VALUE,
    st.integers(-2, 10**6),
    st.sampled_from(["image", "text", "zca", "pca", "cpu", "float16", "ledoit_wolf", "shapes:val", "x"]),
    st.lists(st.sampled_from(["image", "text", "e", "f"]), max_size=3),
    st.dictionaries(st.sampled_from(["download", "allow_outside_root", "max_image_bytes", "x"]), CONFIG_VALUE, max_size=2),
)


@st.composite
def config_mappings(draw):
    """A config class and a mapping for it: its valid mapping with fields set, removed or added."""
    cls = draw(st.sampled_from(CONFIGS))
    mapping = dict(REQUIRED[cls])
    names = [f.name for f in dataclasses.fields(cls)]
    for name in draw(st.lists(st.sampled_from(names), max_size=3)):
        if draw(st.integers(0, 5)) == 0:
            mapping.pop(name, None)
        else:
            mapping[name] = draw(FIELD_VALUE)
    if draw(st.integers(0, 3)) == 0:
        mapping[draw(st.one_of(KEYS, st.integers()))] = draw(CONFIG_VALUE)
    return cls, mapping


@FAST
@given(
    st.one_of(
        config_mappings(),
        st.tuples(st.sampled_from(CONFIGS), st.dictionaries(st.one_of(KEYS, st.integers()), CONFIG_VALUE, max_size=6)),
    )
)
def test_config_loader_gives_a_config_or_a_lakd_error(case):
    cls, mapping = case
    config = result_or_lakd_error(from_mapping, cls, mapping)
    assert config is None or isinstance(config, cls)


@FAST
@given(
    st.sampled_from(CONFIGS),
    st.one_of(
        st.text(alphabet=string.printable, max_size=60),
        CONFIG_VALUE.map(lambda v: yaml.safe_dump(v)),
        # nesting that PyYAML reads, and nesting past its recursion (a few hundred levels)
        st.builds(lambda depth: "model: " + "[" * depth + "]" * depth, st.sampled_from([1, 20, 100, 2_000])),
    ),
    st.lists(st.text(alphabet=string.ascii_lowercase + "._=[]{}:, 0123456789-", max_size=20), max_size=3),
)
def test_config_files_and_overrides_give_a_config_or_a_lakd_error(cls, text, overrides):
    with folder() as root:
        (root / "c.yaml").write_text(text, encoding="utf-8")
        config = result_or_lakd_error(load_config, cls, root / "c.yaml", overrides)
        assert config is None or isinstance(config, cls)
        result_or_lakd_error(apply_overrides, {}, overrides, cls=cls)


# ---- the store reader ----------------------------------------------------------------------------


def _good_store(path: Path) -> dict:
    rng = np.random.default_rng(0)
    write_store(
        path,
        torch.tensor(rng.normal(size=(6, 3)), dtype=torch.float32),
        model="m",
        source="s",
        text=torch.tensor(rng.normal(size=(7, 3)), dtype=torch.float32),
        text_item=torch.tensor([0, 1, 2, 3, 4, 5, 5]),
        captions=[f"c{i}" for i in range(7)],
        ids=[f"i{i}" for i in range(6)],
        labels=torch.tensor([0, 1, -1, 1, 0, 1]),
        classnames=["x", "y"],
    )
    return json.loads((path / "meta.json").read_text())


META_FIELDS = st.sampled_from(
    ["format", "version", "complete", "n_items", "n_texts", "image_dim", "text_dim", "shards", "dtype", "source_options", "classnames"]
)


KEEP = object()  # an edit that leaves the field as it was
EDIT_VALUE = st.one_of(st.just(KEEP), CONFIG_VALUE, st.integers(-1, 10))


@SLOW
@given(
    st.lists(st.tuples(META_FIELDS, EDIT_VALUE), max_size=3),
    st.lists(st.tuples(st.sampled_from(["file", "n_items", "n_texts", "start"]), EDIT_VALUE), max_size=2),
    st.one_of(st.none(), st.none(), st.integers(0, 2000)),
    st.booleans(),
)
def test_store_reader_gives_rows_or_a_lakd_error(meta_edits, shard_edits, cut, allow_nonfinite):
    with folder() as root:
        meta = _good_store(root / "s")
        for key, value in meta_edits:
            if value is not KEEP:
                meta[key] = value
        if isinstance(meta.get("shards"), list) and meta["shards"] and isinstance(meta["shards"][0], dict):
            for key, value in shard_edits:
                if value is not KEEP:
                    meta["shards"][0][key] = value
        (root / "s" / "meta.json").write_text(json.dumps(meta))
        if cut is not None:
            shard = root / "s" / "shard-00000.safetensors"
            shard.write_bytes(shard.read_bytes()[:cut])

        def read():
            store = EmbeddingStore(root / "s", allow_nonfinite=allow_nonfinite)
            for modality in ("image", "text", "text_paired"):
                assert store.load(modality).shape[1] == store.dim(modality)
            return store.ids(), store.captions(), store.paired_captions(), store.labels(), store.text_item()

        result_or_lakd_error(read)


# ---- metric invariances --------------------------------------------------------------------------


def _pair(seed: int, n: int, d: int, related: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + rng.normal(size=d)
    y = related * x[:, rng.permutation(d)] + rng.normal(size=(n, d))
    return x, y


def _rotation(seed: int, d: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed + 1).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


SHAPE = st.tuples(st.integers(0, 10_000), st.integers(12, 40), st.integers(2, 8), st.floats(0.0, 3.0))


@FAST
@given(SHAPE)
def test_cka_and_procrustes_are_invariant_to_a_rotation(params):
    seed, n, d, related = params
    x, y = _pair(seed, n, d, related)
    rotation = _rotation(seed, d)
    assert linear_cka(x @ rotation, y) == pytest.approx(linear_cka(x, y), abs=1e-9)
    assert procrustes_residual(x @ rotation, y) == pytest.approx(procrustes_residual(x, y), abs=1e-9)
    assert procrustes_residual(x, x @ rotation * 2.5 + 1.0) == pytest.approx(0.0, abs=1e-9)
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0, abs=1e-9)


@FAST
@given(SHAPE, st.integers(1, 5))
def test_alignment_metrics_are_invariant_to_a_permutation_of_the_items(params, k):
    seed, n, d, related = params
    x, y = _pair(seed, n, d, related)
    order = np.random.default_rng(seed + 2).permutation(n)
    assert linear_cka(x[order], y[order]) == pytest.approx(linear_cka(x, y), abs=1e-9)
    assert procrustes_residual(x[order], y[order]) == pytest.approx(procrustes_residual(x, y), abs=1e-9)
    assert knn_overlap(x[order], y[order], k=k) == pytest.approx(knn_overlap(x, y, k=k), abs=1e-12)
    assert retrieval_agreement(x[order], y[order]) == pytest.approx(retrieval_agreement(x, y), abs=1e-12)
    rho, rho_permuted = similarity_spearman(x, y)["rho"], similarity_spearman(x[order], y[order])["rho"]
    assert (rho is None and rho_permuted is None) or rho_permuted == pytest.approx(rho, abs=1e-9)
    assert np.allclose(conformity(x[order]), conformity(x)[order], atol=1e-12)


@FAST
@given(SHAPE, st.floats(1e-3, 1e3), st.integers(1, 5))
def test_cosine_metrics_are_invariant_to_the_scale_of_each_row(params, scale, k):
    seed, n, d, related = params
    x, y = _pair(seed, n, d, related)
    rows = scale * np.random.default_rng(seed + 3).uniform(0.5, 2.0, size=(n, 1))  # a scale per row
    assume(np.all(np.linalg.norm(x, axis=1) > 1e-6))
    assert knn_overlap(x * rows, y, k=k) == pytest.approx(knn_overlap(x, y, k=k), abs=1e-12)
    assert retrieval_agreement(x * rows, y) == pytest.approx(retrieval_agreement(x, y), abs=1e-12)
    rho, rho_scaled = similarity_spearman(x, y)["rho"], similarity_spearman(x * rows, y)["rho"]
    assert (rho is None and rho_scaled is None) or rho_scaled == pytest.approx(rho, abs=1e-9)
    assert np.allclose(conformity(x * rows), conformity(x), atol=1e-12)
    assert np.allclose(cross_conformity(x * rows, y * scale), cross_conformity(x, y), atol=1e-12)
