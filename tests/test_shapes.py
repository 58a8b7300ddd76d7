"""The shapes world: determinism, split disjointness, caption truth, probes, the spec, export round trip."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from lakd.data.base import Item, Skipped
from lakd.data.shapes import (
    COLOURS,
    PROBE_CONDITIONS,
    RELATION_MARGIN,
    SHAPES,
    SIZES,
    Conjunction,
    Count,
    Obj,
    Ref,
    Relation,
    Scene,
    ShapesFolder,
    ShapesProbes,
    ShapesWorld,
    clearly_false,
    export_shapes,
    holds,
    parse_caption,
)
from lakd.data.sources import open_source
from lakd.errors import LakdError


def pixels(item: Item) -> np.ndarray:
    return np.asarray(item.image)


def nearest_colour(rgb: np.ndarray) -> str:
    return min(COLOURS, key=lambda name: float(np.sum((np.array(COLOURS[name]) - rgb) ** 2)))


def scene_key(scene: Scene) -> tuple:
    return tuple((o.shape, o.colour, o.size, o.x, o.y) for o in scene.objects)


# --- determinism and splits -------------------------------------------------------------------


def test_same_seed_and_index_give_identical_items():
    a, b = ShapesWorld("train", n=50, seed=7)[13], ShapesWorld("train", n=50, seed=7)[13]
    assert a.id == b.id == "shapes-train-s7-000013"
    assert np.array_equal(pixels(a), pixels(b))
    assert a.captions == b.captions and a.meta == b.meta and a.label == b.label


def test_items_are_random_access():
    world = ShapesWorld("val", n=20, seed=1)
    forward = [world[i].captions for i in range(20)]
    backward = [world[i].captions for i in reversed(range(20))][::-1]
    assert forward == backward
    assert np.array_equal(pixels(world[-1]), pixels(world[19]))


def test_different_index_or_seed_gives_different_items():
    world = ShapesWorld("train", n=10, seed=0)
    images = [pixels(world[i]).tobytes() for i in range(10)]
    assert len(set(images)) == 10
    other = ShapesWorld("train", n=10, seed=1)
    assert all(world[i].meta != other[i].meta for i in range(10))


def test_scene_does_not_depend_on_image_size_or_noise():
    big, plain = ShapesWorld("val", n=5, image_size=96), ShapesWorld("val", n=5, noise=False)
    for i in range(5):
        assert big.scene(i) == plain.scene(i)
    assert big[0].image.size == (96, 96)


def test_splits_do_not_overlap():
    n = 3000
    keys = {
        split: {scene_key(ShapesWorld(split, n=n).scene(i)[0]) for i in range(n)}
        for split in ("train", "val", "test", "probes")
    }
    assert all(len(k) == n for k in keys.values())  # no repeats inside a split either
    splits = list(keys)
    for i, first in enumerate(splits):
        for second in splits[i + 1 :]:
            assert not keys[first] & keys[second], (first, second)


def test_index_out_of_range():
    with pytest.raises(IndexError):
        ShapesWorld("val", n=3)[3]


def test_default_sizes_and_dataloader_workers_match_direct_indexing():
    assert [len(ShapesWorld(s)) for s in ("train", "val", "test")] == [10000, 2000, 2000]
    world = ShapesWorld("test", n=8)
    loader = DataLoader(world, batch_size=4, num_workers=2, collate_fn=list)
    loaded = [item for batch in loader for item in batch]
    assert [item.captions for item in loaded] == [world[i].captions for i in range(8)]
    assert all(np.array_equal(pixels(item), pixels(world[i])) for i, item in enumerate(loaded))


# --- scenes, rendering and labels -------------------------------------------------------------


def test_rendered_objects_are_present_with_their_colour():
    for noise in (True, False):
        world = ShapesWorld("train", n=150, noise=noise)
        for i in range(len(world)):
            item = world[i]
            image = pixels(item).astype(float)
            for obj in item.meta["objects"]:
                cx, cy = int(obj["x"] * 64), int(obj["y"] * 64)
                patch = image[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(axis=0)
                assert nearest_colour(patch) == obj["colour"], (item.id, obj)
                if not noise:
                    assert np.abs(patch - COLOURS[obj["colour"]]).max() < 1.0


def test_objects_do_not_overlap_and_stay_inside():
    world = ShapesWorld("train", n=500)
    counts = Counter()
    for i in range(len(world)):
        objects = world.scene(i)[0].objects
        counts[len(objects)] += 1
        assert len({(o.shape, o.colour) for o in objects}) == len(objects)
        for a in objects:
            assert (
                a.radius - 1e-3 <= a.x <= 1 - a.radius + 1e-3
                and a.radius - 1e-3 <= a.y <= 1 - a.radius + 1e-3
            )
        for a_i, a in enumerate(objects):
            for b in objects[a_i + 1 :]:
                assert math.hypot(a.x - b.x, a.y - b.y) >= a.radius + b.radius
    assert set(counts) == {1, 2, 3}


def test_labels_match_classnames_and_primary_object():
    world = ShapesWorld("val", n=300, max_objects=1)
    assert world.classnames == list(SHAPES)
    labels = []
    for i in range(len(world)):
        item = world[i]
        assert len(item.meta["objects"]) == 1
        assert world.classnames[item.label] == item.meta["objects"][0]["shape"]
        labels.append(item.label)
    assert set(labels) == set(range(len(SHAPES)))
    multi = ShapesWorld("val", n=50)
    assert all(multi.classnames[multi[i].label] == multi[i].meta["objects"][0]["shape"] for i in range(50))


def test_vocabulary_is_large_enough_and_colours_distinct():
    assert len(SHAPES) >= 5 and len(COLOURS) >= 6 and set(SIZES) == {"small", "large"}
    rgb = np.array(list(COLOURS.values()), dtype=float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert distances.min() > 60


# --- captions ---------------------------------------------------------------------------------


def test_every_caption_is_true_and_round_trips_through_text():
    kinds = Counter()
    for split in ("train", "test"):
        world = ShapesWorld(split, n=300)
        for i in range(len(world)):
            scene, captions = world.scene(i)
            texts = [c.text() for c in captions]
            assert len(set(texts)) == len(texts)
            for caption in captions:
                kinds[caption.kind] += 1
                assert holds(caption, scene), (caption.text(), scene)
                assert parse_caption(caption.text()) == caption
                assert holds(caption.text(), scene)
            primary = captions[0]
            assert [ref for _, ref in primary.clauses] == [Ref.of(o, size=True) for o in scene.objects]
    assert set(kinds) == {"plain", "binding", "relation", "count", "negation"}


def test_item_captions_and_kinds_align():
    item = ShapesWorld("val", n=3)[2]
    assert len(item.captions) == len(item.meta["caption_kinds"]) >= 4
    assert item.meta["caption_kinds"][-1] == "negation"
    json.dumps(item.meta)  # plain JSON


TWO = Scene((Obj("circle", "red", "small", 0.2, 0.5), Obj("square", "blue", "large", 0.7, 0.45)))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a red circle", True),
        ("a small red circle", True),
        ("a large red circle", False),
        ("a blue circle", False),
        ("a red circle and a blue square", True),
        ("a blue circle and a red square", False),
        ("a red circle and a red shape", False),  # two distinct objects are needed
        ("a red circle and no square", False),
        ("a red circle and no triangle", True),
        ("no red shape", False),
        ("a red circle left of a blue square", True),
        ("a blue square right of a red circle", True),
        ("a blue square left of a red circle", False),
        ("a red circle above a blue square", False),  # 0.05 apart vertically: not a clear relation
        ("two shapes", True),
        ("three shapes", False),
        ("one circle", True),
        ("two circles", False),
        ("one blue shape", True),
    ],
)
def test_checker_on_a_known_scene(text, expected):
    assert holds(text, TWO) is expected


def test_lenient_reading_for_negatives():
    # "above" is not clearly true (0.05 < margin) but not clearly false either
    assert not holds("a red circle above a blue square", TWO)
    assert not clearly_false("a red circle above a blue square", TWO)
    assert clearly_false("a blue square left of a red circle", TWO)
    assert RELATION_MARGIN > 0.05


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a red",
        "a red dog",
        "some red circle",
        "a shiny red circle",
        "two circle",
        "one circles",
        "a red circle left of",
    ],
)
def test_unparseable_captions_raise_lakd_error(text):
    with pytest.raises(LakdError):
        parse_caption(text)


refs = st.builds(
    Ref,
    st.one_of(st.none(), st.sampled_from(SHAPES)),
    st.one_of(st.none(), st.sampled_from(list(COLOURS))),
    st.one_of(st.none(), st.sampled_from(list(SIZES))),
)
captions = st.one_of(
    st.builds(Conjunction, st.lists(st.tuples(st.booleans(), refs), min_size=1, max_size=4).map(tuple)),
    st.builds(Relation, refs, st.sampled_from(["left of", "right of", "above", "below"]), refs),
    st.builds(Count, st.integers(0, 6), refs),
)


@settings(database=None)  # keep the repository free of .hypothesis/
@given(captions)
def test_any_structured_caption_round_trips(caption):
    assert parse_caption(caption.text()) == caption


# --- probes -----------------------------------------------------------------------------------


def test_probes_are_balanced_and_negatives_are_false_and_distinct():
    probes = ShapesProbes(n=200, k=3)
    conditions = Counter()
    for i in range(len(probes)):
        scene, probe = probes.probe(i)
        conditions[probe.condition] += 1
        texts = [probe.true.text(), *(c.text() for c in probe.negatives)]
        assert len(texts) == 4 and len(set(texts)) == 4
        assert holds(probe.true, scene)
        assert all(
            clearly_false(neg, scene) and clearly_false(text, scene)
            for neg, text in zip(probe.negatives, texts[1:], strict=True)
        )
        if probe.condition == "binding":  # only colours move; shapes stay in place
            assert all(
                [r.shape for _, r in n.clauses] == [r.shape for _, r in probe.true.clauses]
                for n in probe.negatives
            )
            assert all(
                {r.colour for _, r in n.clauses} <= {o.colour for o in scene.objects} for n in probe.negatives
            )
        if probe.condition == "spatial":
            assert all(isinstance(n, Relation) for n in [probe.true, *probe.negatives])
        if probe.condition == "negation":
            assert probe.true.kind == "negation"
            assert all(
                {r for _, r in n.clauses} == {r for _, r in probe.true.clauses} for n in probe.negatives[:3]
            )
    assert conditions == {c: 50 for c in PROBE_CONDITIONS}


def test_probe_items_carry_condition_and_true_count():
    probes = ShapesProbes(n=6, k=2, seed=3)
    item = probes[5]
    assert item.id == "shapes-probes-s3-000005"
    assert len(item.captions) == 3 and item.meta["n_true"] == 1
    assert item.meta["condition"] == PROBE_CONDITIONS[5 % 4]
    assert np.array_equal(pixels(item), pixels(ShapesProbes(n=6, k=2, seed=3)[5]))


def test_probe_option_errors():
    with pytest.raises(LakdError, match="k=40"):
        ShapesProbes(n=4, k=40)
    with pytest.raises(LakdError, match="max_objects"):
        ShapesProbes(n=4, max_objects=1)
    with pytest.raises(LakdError, match="k=0"):
        ShapesProbes(n=4, k=0)


# --- the shapes: spec -------------------------------------------------------------------------


def test_spec_options_reach_the_dataset():
    world = open_source("shapes:val?n=5&seed=3&image_size=32&max_objects=2&noise=0")
    assert isinstance(world, ShapesWorld) and len(world) == 5
    assert (world.seed, world.image_size, world.max_objects, world.noise) == (3, 32, 2, False)
    assert world[0].image.size == (32, 32)
    assert len(open_source("shapes:train")) == 10000
    probes = open_source("shapes:probes?n=8&k=2")
    assert isinstance(probes, ShapesProbes) and len(probes[0].captions) == 3


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("shapes:bogus", "train, val, test, probes"),
        ("shapes:val?n=abc", "n='abc'"),
        ("shapes:val?n=0", "n=0"),
        ("shapes:val?seed=-1", "seed=-1"),
        ("shapes:val?image_size=8", "image_size=8"),
        ("shapes:val?max_objects=4", "max_objects=4"),
        ("shapes:val?noise=maybe", "noise='maybe'"),
        ("shapes:val?colour=red", "unknown option 'colour'"),
        ("shapes:val?k=3", "unknown option 'k'"),
        ("shapes:probes?k=x", "k='x'"),
    ],
)
def test_bad_specs_name_the_spec_and_problem(spec, fragment):
    with pytest.raises(LakdError) as err:
        open_source(spec)
    assert str(err.value).startswith("shapes:") and fragment in str(err.value)
    assert "\n" not in str(err.value)


# --- export and the folder reader -------------------------------------------------------------


def test_export_round_trip_through_open_source(tmp_path):
    out = export_shapes(tmp_path / "val", split="val", n=6, seed=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "captions.csv",
        "images",
        "lakd_shapes.json",
        "scenes.jsonl",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["val"]  # no temporary folder left behind
    marker = json.loads((out / "lakd_shapes.json").read_text())
    assert (marker["split"], marker["n"], marker["seed"], marker["classnames"]) == ("val", 6, 2, list(SHAPES))
    world = ShapesWorld("val", n=6, seed=2)
    table = pd.read_csv(out / "captions.csv", sep="\t")
    assert {
        "filepath",
        "title",
        "n_objects",
        "label",
        "classname",
        "shapes",
        "colours",
        "sizes",
        "positions",
        "captions",
    } <= set(table.columns)
    assert list(table["title"]) == [world[i].captions[0] for i in range(6)]
    assert all((out / p).is_file() for p in table["filepath"])
    assert table["shapes"][0].split(",") == [o["shape"] for o in world[0].meta["objects"]]
    assert json.loads(table["positions"][0]) == [[o["x"], o["y"]] for o in world[0].meta["objects"]]
    assert table["captions"][0].split(" | ") == world[0].captions

    folder = open_source(str(out))
    assert isinstance(folder, ShapesFolder) and len(folder) == 6 and folder.classnames == list(SHAPES)
    for i in range(6):
        read, made = folder[i], world[i]
        assert (read.id, read.captions, read.label, read.meta) == (
            made.id,
            made.captions,
            made.label,
            made.meta,
        )
        assert np.array_equal(pixels(read), pixels(made))
        assert all(holds(caption, Scene.from_dict(read.meta)) for caption in read.captions)


def test_probe_export_keeps_condition_and_negatives(tmp_path):
    out = export_shapes(tmp_path / "probes", split="probes", n=4, k=2, progress=False)
    records = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
    assert [r["condition"] for r in records] == list(PROBE_CONDITIONS)
    assert all(r["negatives"] == r["captions"][1:] and len(r["negatives"]) == 2 for r in records)
    item = open_source(str(out))[1]
    assert (
        item.meta["condition"] == PROBE_CONDITIONS[1] and item.meta["n_true"] == 1 and len(item.captions) == 3
    )
    assert "condition" in pd.read_csv(out / "captions.csv", sep="\t").columns


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n not really a png"), "not an image"),
        (lambda p: p.write_bytes(b""), "zero-byte"),
        (lambda p: p.unlink(), "missing"),
        (lambda p: p.write_bytes(p.read_bytes()[:60]), "corrupt"),
    ],
)
def test_damaged_png_gives_skipped_item(tmp_path, damage, reason):
    out = export_shapes(tmp_path / "d", split="test", n=3, progress=False)
    damage(out / "images" / "shapes-test-s0-000001.png")
    folder = open_source(str(out))
    skipped = folder[1]
    assert isinstance(skipped, Skipped) and skipped.id == "shapes-test-s0-000001"
    assert reason in skipped.reason and skipped.path.endswith("shapes-test-s0-000001.png")
    assert isinstance(folder[0], Item) and isinstance(folder[2], Item)


def test_existing_folder_needs_overwrite(tmp_path):
    out = export_shapes(tmp_path / "x", split="val", n=2, progress=False)
    before = (out / "scenes.jsonl").read_text()
    with pytest.raises(LakdError, match="already exists"):
        export_shapes(out, split="val", n=3, seed=5, progress=False)
    assert (out / "scenes.jsonl").read_text() == before
    export_shapes(out, split="val", n=3, seed=5, overwrite=True, progress=False)
    assert len(ShapesFolder(out)) == 3 and [p.name for p in tmp_path.iterdir()] == ["x"]


def test_bad_export_options_leave_nothing_behind(tmp_path):
    with pytest.raises(LakdError, match="split"):
        export_shapes(tmp_path / "bad", split="holdout", n=2, progress=False)
    assert list(tmp_path.iterdir()) == []


def _rewrite_records(out, edit):
    lines = (out / "scenes.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    edit(records)
    (out / "scenes.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda rs: rs[1].pop("captions"), "scenes.jsonl:2: missing field 'captions'"),
        (lambda rs: rs[0].update(label="circle"), "field 'label'"),
        (lambda rs: rs[0].update(label=99), "outside classnames"),
        (lambda rs: rs[0].update(filepath="../../etc/passwd"), "escapes the folder"),
        (lambda rs: rs.pop(), "says n=3"),
    ],
)
def test_bad_scenes_file_is_a_one_line_error(tmp_path, edit, fragment):
    out = export_shapes(tmp_path / "f", split="val", n=3, progress=False)
    _rewrite_records(out, edit)
    with pytest.raises(LakdError, match=fragment.replace("(", r"\(")):
        open_source(str(out))


def test_bad_marker_or_json_line_is_a_one_line_error(tmp_path):
    out = export_shapes(tmp_path / "m", split="val", n=2, progress=False)
    (out / "scenes.jsonl").write_text("{not json\n")
    with pytest.raises(LakdError, match="scenes.jsonl:1: not valid JSON"):
        ShapesFolder(out)
    (out / "lakd_shapes.json").write_text("[1, 2")
    with pytest.raises(LakdError, match="lakd_shapes.json: not a readable JSON file"):
        open_source(str(out))
