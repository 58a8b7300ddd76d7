"""Hostile input: each test names the hole it closes (a huge size, a deep JSON, a label that
overflows, a format spec that pads forever, a file that is not a file, ids that collide, a folder
that is not ours, a failed run's leftovers, rounding taken for signal, half precision, ties).
docs/reliability.md lists them by area."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_readers import write_shard  # one webdataset shard writer for the tests

from lakd.analysis import analyze, fit_whitening, log_likelihood, whiten
from lakd.analysis.alignment import knn_overlap, retrieval_agreement, similarity_spearman
from lakd.analysis.conformity import conformity_fit
from lakd.cli import main
from lakd.data import Skipped, SourceOptions, open_source
from lakd.data.readers.coco import read_coco
from lakd.data.shapes import ShapesWorld
from lakd.data.store import StoreSpec, write_store
from lakd.errors import LakdError
from lakd.eval.templates import class_prompts_text, load_templates
from lakd.io import atomic_dir, clear_stale
from lakd.models.embed import ShardBatches

ROOT = Path(__file__).resolve().parents[1]


def png_bytes(size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()




def one_error_line(capsys) -> str:
    """The one line stderr holds besides progress bars (``embedding ...``)."""
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("embedding ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def dead_pid() -> int:
    """A process id that no process has now."""
    for pid in range(4_194_000, 4_000_000, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise RuntimeError("no free process id")


# ---- 1. a huge data size ------------------------------------------------------------------------


def test_embed_batches_are_made_as_they_are_asked_for():
    tracemalloc.start()
    batches = ShardBatches([(0, 10**12)], [0], 64)
    first = next(iter(batches))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert first == list(range(64))
    assert len(batches) == 10**12 // 64 and batches.n_items == 10**12
    assert peak < 1 << 20  # nothing sized by the data was built
    shards = ShardBatches([(0, 10), (10, 20), (20, 25)], [0, 2], 4)
    assert list(shards) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [20, 21, 22, 23], [24]]
    assert len(shards) == 5 and shards.n_items == 15


def test_shapes_world_caps_its_size_and_embed_says_so_before_loading_a_model(tmp_path, capsys):
    with pytest.raises(LakdError) as err:
        open_source("shapes:val?n=10000000000")
    assert str(err.value) == (
        "shapes:val?n=10000000000: shapes world: n=10000000000 is not valid (expected an integer in 1..100000000)"
    )
    args = ["embed", "--model", "lakd:tiny-vit", "--data", "shapes:val?n=10000000000", "--out", str(tmp_path / "e")]
    assert main(args) == 1
    assert one_error_line(capsys) == f"error: {err.value}"
    assert not (tmp_path / "e").exists()


def test_a_store_of_more_shards_than_a_store_holds_is_refused():
    with pytest.raises(LakdError) as err:
        StoreSpec(model="m", source="s", n_source_items=10**9, shard_size=1)
    assert str(err.value) == (
        "shard_size: 1000000000 source items in shards of 1 make 1000000000 shards, more than a store holds "
        "(100000); use a larger `shard_size`"
    )
    assert StoreSpec(model="m", source="s", n_source_items=10**9, shard_size=10_000).shard_size == 10_000


# ---- 2., 3. webdataset captions and labels -------------------------------------------------------


def test_webdataset_caption_json_nested_too_deeply_is_a_skipped_sample(tmp_path):
    shard = write_shard(
        tmp_path / "s.tar",
        {"deep.png": png_bytes(), "deep.json": b"[" * 200_000 + b"]" * 200_000, "ok.png": png_bytes(), "ok.txt": b"x"},
    )
    data = open_source(f"wds:{shard}")
    deep, ok = data[0], data[1]
    assert isinstance(deep, Skipped) and deep.id == "deep"
    assert deep.reason == "unreadable caption or label (caption JSON nested too deeply)"
    assert ok.captions == ["x"]


@pytest.mark.parametrize(
    "label, reason",
    [
        (b"100000000000000000000000", "label '100000000000000000000000' is not a class index (an integer in 0..2147483647)"),
        (b"-3", "label '-3' is not a class index (an integer in 0..2147483647)"),
        (b"2147483648", "label '2147483648' is not a class index (an integer in 0..2147483647)"),
        (b"\xd9\xa3", "label '\u0663' is not a class index (an integer in 0..2147483647)"),  # Arabic-Indic 3
    ],
)
def test_webdataset_label_that_is_no_class_index_is_a_skipped_sample(tmp_path, label, reason):
    shard = write_shard(tmp_path / "s.tar", {"a.png": png_bytes(), "a.txt": b"x", "a.cls": label})
    (skipped,) = [open_source(f"wds:{shard}")[0]]
    assert isinstance(skipped, Skipped) and skipped.reason == f"unreadable caption or label ({reason})"


def test_webdataset_oversized_members_are_skipped(tmp_path):
    shard = write_shard(
        tmp_path / "s.tar",
        {"a.png": png_bytes((64, 64)), "a.txt": b"x", "b.png": png_bytes(), "b.txt": b"y" * ((1 << 20) + 1)},
    )
    data = open_source(f"wds:{shard}", SourceOptions(max_image_bytes=100))
    assert data[0].reason.startswith("file of ") and data[0].reason.endswith(", over the 100 B image size limit")
    assert open_source(f"wds:{shard}")[1].reason == (
        "unreadable caption or label (caption of 1048577 bytes, over the 1048576 byte limit)"
    )


def test_webdataset_pattern_of_too_many_shards_is_refused_before_naming_them():
    with pytest.raises(LakdError) as err:
        open_source("wds:x-{0..99999999999}.tar")
    assert str(err.value) == "wds:x-{0..99999999999}.tar: names more than 100000 shards"


def test_embed_completes_a_store_past_a_deep_caption_and_a_huge_label(tmp_path, capsys):
    shard = write_shard(
        tmp_path / "s.tar",
        {
            "a.png": png_bytes(),
            "a.txt": b"a red square",
            "a.cls": b"1",
            "deep.png": png_bytes(),
            "deep.json": b"[" * 200_000 + b"]" * 200_000,
            "huge.png": png_bytes(),
            "huge.txt": b"a caption",
            "huge.cls": b"100000000000000000000000",
        },
    )
    out = tmp_path / "e"
    assert main(["embed", "--model", "lakd:tiny-vit", "--data", f"wds:{shard}", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "skipped 2 unreadable image(s)" in err and "Traceback" not in err
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["complete"], meta["n_items"], meta["n_skipped"]) == (True, 1, 2)


# ---- 4. prompt templates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template, found",
    [("a {c:>3000000000}", "{c:>3000000000}"), ("a {c!r}", "{c!r}"), ("a {c:{c}}", "{c:{c}}")],
)
def test_template_with_a_format_spec_or_conversion_is_refused(tmp_path, template, found):
    path = tmp_path / "t.txt"
    path.write_text(f"# mine\na {{c}}.\n{template}\n")
    with pytest.raises(LakdError) as err:
        load_templates(path)
    assert str(err.value) == (
        f"{path}:3: template {template!r} must use {{c}} as it is, without a conversion or format spec (found {found})"
    )
    with pytest.raises(LakdError, match="without a conversion or format spec"):
        class_prompts_text(["circle"], [template])
    assert class_prompts_text(["circle"], ["a {c}.", "{{c}} {c}"]) == ["a circle.", "{c} circle"]


# ---- 5. image files that are not files, or too large --------------------------------------------


def _csv_of(tmp_path: Path, names: list[str]) -> str:
    (tmp_path / "c.csv").write_text("filepath,title\n" + "".join(f"{n},caption of {n}\n" for n in names))
    return str(tmp_path / "c.csv")


def test_image_path_that_is_not_a_regular_file_is_skipped_before_reading(tmp_path):
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pipe.png")  # opening it must not wait for a writer
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "ok.png").write_bytes(png_bytes())
    data = open_source(_csv_of(tmp_path, ["zero.png", "pipe.png", "dir.png", "ok.png"]))
    reasons = [data[i].reason if isinstance(data[i], Skipped) else "read" for i in range(len(data))]
    assert reasons == [
        "not a regular file (a character device)",
        "not a regular file (a named pipe)",
        "a folder, not a file",
        "read",
    ]


def test_image_file_over_the_size_limit_is_skipped(tmp_path):
    (tmp_path / "big.png").write_bytes(png_bytes() + b"\0" * 200)
    (tmp_path / "ok.png").write_bytes(png_bytes())
    size = (tmp_path / "big.png").stat().st_size
    spec = _csv_of(tmp_path, ["big.png", "ok.png"])
    limit = (tmp_path / "ok.png").stat().st_size
    small = open_source(spec, SourceOptions(max_image_bytes=limit))
    assert small[0].reason == f"file of {size} B, over the {limit} B image size limit"
    assert small[1].image.size == (8, 8)
    assert open_source(spec)[0].image.size == (8, 8)  # the default limit is 64 MiB
    assert SourceOptions().max_image_bytes == 64 * 1024 * 1024
    with pytest.raises(LakdError, match=r"^max_image_bytes: must be a positive number of bytes, got 0$"):
        SourceOptions(max_image_bytes=0)


def test_cli_max_image_bytes_reaches_the_reader(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(png_bytes())
    (tmp_path / "b.png").write_bytes(png_bytes((64, 64)))
    spec = _csv_of(tmp_path, ["a.png", "b.png"])
    limit = (tmp_path / "a.png").stat().st_size
    out = tmp_path / "e"
    args = ["embed", "--model", "lakd:tiny-vit", "--data", spec, "--out", str(out), "--max-image-bytes", str(limit)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image(s)" in err and f"over the {limit} B image size limit" in err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_items"] == 1 and meta["source_options"]["max_image_bytes"] == limit


# ---- 6. stores of other items under the same ids -------------------------------------------------


def test_shapes_ids_name_the_seed():
    assert ShapesWorld("val", n=3, seed=5).item_id(2) == "shapes-val-s5-000002"
    assert ShapesWorld("val", n=3)[1].id == "shapes-val-s0-000001"
    assert open_source("shapes:val?n=3&seed=1")[0].id != open_source("shapes:val?n=3")[0].id


def _synthetic_store(path: Path, captions: list[str]) -> Path:
    rng = np.random.default_rng(len(path.name))
    n = len(captions)
    write_store(
        path,
        torch.tensor(rng.normal(size=(n, 6)), dtype=torch.float32),
        model="synthetic",
        source="synthetic",
        text=torch.tensor(rng.normal(size=(n, 6)), dtype=torch.float32),
        text_item=torch.arange(n),
        captions=captions,
        ids=[f"item-{i:02d}" for i in range(n)],
    )
    return path


def test_report_refuses_stores_of_the_same_ids_but_other_captions(tmp_path, capsys):
    captions = [f"caption {i}" for i in range(30)]
    a = _synthetic_store(tmp_path / "a", captions)
    b = _synthetic_store(tmp_path / "b", [*captions[:7], "another thing", *captions[8:]])
    out = tmp_path / "r"
    assert main(["geometry", "report", "--embeddings", str(a), "--embeddings", str(b), "--out", str(out)]) == 1
    assert one_error_line(capsys) == (
        f"error: {b}: its items have the ids of {a}'s but other captions (item 'item-07' is captioned "
        "'another thing' vs 'caption 7'); a report compares embeddings of the same items"
    )
    assert not out.exists()


# ---- 7. --overwrite replaces only what lakd wrote ------------------------------------------------


def test_embed_overwrite_never_replaces_a_folder_that_is_not_a_store(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "meta.json").write_text('{"my": "notes"}')
    base = ["embed", "--model", "lakd:tiny-vit", "--data", "shapes:val?n=2", "--out", str(out)]
    for args, even in ((base, ""), ([*base, "--overwrite"], ", even with --overwrite")):
        assert main(args) == 1
        assert one_error_line(capsys) == (
            f"error: {out / 'meta.json'}: not a lakd embedding store meta (no format 'lakd-embeddings'); "
            f"not replacing it{even}; choose another --out"
        )
    assert (out / "meta.json").read_text() == '{"my": "notes"}'
    (out / "meta.json").unlink()
    (out / "shard-00000.safetensors").write_text("mine")
    assert main([*base, "--overwrite"]) == 1
    assert "holds shard files but no meta.json, so it is not a lakd embedding store" in one_error_line(capsys)
    assert (out / "shard-00000.safetensors").read_text() == "mine"


def test_data_shapes_overwrite_never_replaces_a_folder_that_is_not_a_shapes_folder(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert main(["data", "shapes", "--out", str(out), "--n", "2", "--overwrite"]) == 1
    assert one_error_line(capsys) == (
        f"error: {out}: exists and is not a shapes folder (no lakd_shapes.json); not replacing it, even with "
        "--overwrite; choose another --out"
    )
    assert main(["data", "shapes", "--out", str(out), "--n", "2"]) == 1  # and --overwrite is not advised
    assert one_error_line(capsys) == (
        f"error: {out}: exists and is not a shapes folder (no lakd_shapes.json); not replacing it; choose another --out"
    )
    assert (out / "notes.txt").read_text() == "keep"


def test_whiten_apply_never_advises_or_does_an_overwrite_of_a_folder_that_is_not_a_store(tmp_path, capsys):
    source = _synthetic_store(tmp_path / "s", [f"caption {i}" for i in range(30)])
    assert main(["whiten", "fit", "--embeddings", str(source), "--out", str(tmp_path / "w.safetensors")]) == 0
    capsys.readouterr()
    out = tmp_path / "mine"
    out.mkdir()
    (out / "meta.json").write_text('{"my": "notes"}')
    base = ["whiten", "apply", "--embeddings", str(source), "--stats", str(tmp_path / "w.safetensors"), "--out", str(out)]
    problem = f"error: {out}: exists and is not a lakd embedding store (no meta.json with format 'lakd-embeddings')"
    assert main(base) == 1
    assert one_error_line(capsys) == f"{problem}; not replacing it; choose another --out"
    assert main([*base, "--overwrite"]) == 1
    assert one_error_line(capsys) == f"{problem}; not replacing it, even with --overwrite; choose another --out"
    assert sorted(p.name for p in out.iterdir()) == ["meta.json"] and (out / "meta.json").read_text() == '{"my": "notes"}'


# ---- 8. a failed eval leaves no cache key ---------------------------------------------------------


def test_failed_eval_leaves_no_cache_behind(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(bad), "--data", "shapes:val?n=4", "--out", str(out)]) == 1
    assert str(bad) in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_failed_teacher_leaves_no_cache_key_and_a_begun_store_keeps_its_key(tmp_path, capsys):
    from lakd.data.cache import KEY_FILE, cached_store

    def failing(overwrite):
        raise LakdError("model: does not load")

    with pytest.raises(LakdError):
        cached_store(tmp_path / "cache" / "slug", {"model": "m"}, failing)
    assert not (tmp_path / "cache").exists()

    def begun(overwrite):
        (tmp_path / "cache" / "slug" / "meta.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_store(tmp_path / "cache" / "slug", {"model": "m"}, begun)
    assert json.loads((tmp_path / "cache" / "slug" / KEY_FILE).read_text()) == {"model": "m"}


# ---- 9. advice valid for the command that printed it ------------------------------------------------


def _nan_store(path: Path) -> Path:
    rng = np.random.default_rng(0)
    image = torch.tensor(rng.normal(size=(20, 6)), dtype=torch.float32)
    image[3] = float("nan")
    write_store(
        path,
        image,
        model="synthetic",
        source="synthetic",
        text=torch.tensor(rng.normal(size=(20, 6)), dtype=torch.float32),
        text_item=torch.arange(20),
        captions=[f"caption {i}" for i in range(20)],
        ids=[f"item-{i:02d}" for i in range(20)],
    )
    return path


def test_eval_drops_nonfinite_rows_as_its_advice_says(tmp_path, capsys):
    store = _nan_store(tmp_path / "nan")
    out = tmp_path / "r.json"
    assert main(["eval", "--embeddings", str(store), "--out", str(out)]) == 1
    assert one_error_line(capsys).endswith("1 of 20 image rows contain NaN/Inf; rerun with --allow-nonfinite to drop them")
    assert main(["eval", "--embeddings", str(store), "--out", str(out), "--allow-nonfinite"]) == 0
    assert "warning: " in capsys.readouterr().err
    record = json.loads(out.read_text())
    assert record["task"] == "zeroshot_retrieval" and (record["lakd"]["n_items"], record["lakd"]["n_texts"]) == (19, 19)


def _bare_checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 1}, path)
    return path


def test_a_teacher_or_report_checkpoint_without_config_gets_advice_it_can_follow(tmp_path, capsys):
    bare = _bare_checkpoint(tmp_path / "oc.pt")
    args = ["eval", "--model", "lakd:tiny-vit", "--data", "shapes:val?n=4", "--teacher", str(bare)]
    assert main([*args, "--out", str(tmp_path / "r.json")]) == 1
    assert one_error_line(capsys) == (
        f"error: {bare}: no model_cfg in the checkpoint (an open_clip checkpoint?): a teacher is read without an "
        "architecture; embed the data with it first (lakd embed and its arch option) and give that store as "
        "--teacher-embeddings"
    )
    args = ["geometry", "report", "--model", str(bare), "--data", "shapes:val?n=4", "--out", str(tmp_path / "rep")]
    assert main(args) == 1
    assert one_error_line(capsys) == (
        f"error: {bare}: no model_cfg in the checkpoint (an open_clip checkpoint?): a report reads models without "
        "an architecture; embed the data with it first (lakd embed and its arch option) and give that store as "
        "one of the --embeddings"
    )


# ---- 10. COCO ids ------------------------------------------------------------------------------------


def test_coco_ids_1_and_string_1_are_one_image(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    ann = tmp_path / "ann.json"
    images = [{"id": 1, "file_name": "a.png"}, {"id": "1", "file_name": "a.png"}]
    ann.write_text(json.dumps({"images": images, "annotations": []}))
    with pytest.raises(LakdError) as err:
        read_coco(ann, tmp_path, SourceOptions(), str(ann))
    assert str(err.value) == f"{ann}: images[1].id '1' appears twice (item id '1')"
    annotations = [{"image_id": 1, "caption": "one"}, {"image_id": "1", "caption": "two"}]
    ann.write_text(json.dumps({"images": images[:1], "annotations": annotations}))
    data = read_coco(ann, tmp_path, SourceOptions(), str(ann))
    assert data.ids == ["1"] and data[0].captions == ["one", "two"]


def test_coco_json_nested_too_deeply_is_one_error(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(LakdError) as err:
        open_source(str(ann))
    assert str(err.value) == f"{ann}: JSON nested too deeply to read"


# ---- 11. one line per warning, one line for no network ----------------------------------------------


def test_each_warning_prints_once_when_the_root_logger_has_a_handler(tmp_path, capsys):
    store = _nan_store(tmp_path / "nan")
    root_stream = io.StringIO()
    handler = logging.StreamHandler(root_stream)  # what logging.basicConfig (open_clip's logging.warning) installs
    logging.getLogger().addHandler(handler)
    try:
        args = ["whiten", "fit", "--embeddings", str(store), "--out", str(tmp_path / "w.safetensors")]
        assert main([*args, "--allow-nonfinite"]) == 0
    finally:
        logging.getLogger().removeHandler(handler)
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"warning: {store}: dropped 1 item(s) and 1 caption(s) with NaN/Inf embeddings (--allow-nonfinite)"
    ]
    assert root_stream.getvalue() == ""
    assert logging.getLogger("lakd").propagate  # Python callers' logging is left as it was


def test_pretrained_tag_without_network_is_one_line_at_once(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    import lakd.models.factory as factory

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(factory, "_tag_is_cached", lambda cfg: False)
    monkeypatch.setattr(factory.urllib.request, "getproxies", dict)

    def unreachable(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    args = ["embed", "--model", "open_clip:RN50@openai", "--data", "shapes:val?n=2", "--out", str(tmp_path / "e")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: open_clip:RN50@openai: not in the local cache, and huggingface.co cannot be reached to download it "
        "(Network is unreachable); connect to the network, or copy the Hugging Face cache of a machine that has it "
        "(HF_HOME)"
    ]


# ---- 12. what a killed run left beside its output ---------------------------------------------------


def test_a_killed_atomic_dir_leaves_a_folder_the_next_run_clears(tmp_path):
    out = tmp_path / "report"
    script = textwrap.dedent(
        f"""
        import os, signal
        from lakd.io import atomic_dir
        with atomic_dir({str(out)!r}) as tmp:
            (tmp / "half.txt").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert result.returncode == -signal.SIGKILL
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".report.") and left.name.endswith(".tmp") and (left / "half.txt").exists()
    mine = tmp_path / f".report.{os.getpid()}.abcdefgh.tmp"  # a live process's: left alone
    other = tmp_path / ".report.backup.tmp"  # not our pattern: left alone
    mine.mkdir()
    other.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "full.txt").write_text("full")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name, "report"])


def test_a_kill_between_the_renames_gives_the_old_folder_back(tmp_path):
    out = tmp_path / "report"
    aside = tmp_path / f".report.{dead_pid()}.k2j4h5g6.old"
    (aside / "report").mkdir(parents=True)
    (aside / "report" / "metrics.json").write_text("previous")
    assert clear_stale(out) == [aside]
    assert (out / "metrics.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_report_clears_a_killed_report_before_it_checks_its_output(tmp_path, capsys):
    a = _synthetic_store(tmp_path / "a", [f"caption {i}" for i in range(30)])
    out = tmp_path / "r"
    left = tmp_path / f".r.{dead_pid()}.zz9ab12c.tmp"
    (left / "embeddings").mkdir(parents=True)
    assert main(["geometry", "report", "--embeddings", str(a), "--out", str(out), "--tsne-items", "10"]) == 0
    capsys.readouterr()
    assert not left.exists() and (out / "metrics.json").is_file()


# ---- 13. rounding is not signal -------------------------------------------------------------------


def test_conformity_fit_on_values_that_differ_only_by_rounding_is_null():
    c = np.full(50, 0.3) + (np.arange(50) % 3) * np.spacing(0.3)
    cos = np.linspace(0.1, 0.9, 50)
    assert np.ptp(c) > 0
    assert conformity_fit(c, cos) == {
        "slope": None,
        "intercept": None,
        "pearson_r": None,
        "n": 50,
        "reason": "constant input",
    }
    assert conformity_fit(cos, np.full(50, 1e-17) + np.arange(50) * 1e-30)["reason"] == "constant input"
    assert conformity_fit(cos * 0.5 + 0.1, cos)["pearson_r"] == pytest.approx(1.0)


def test_similarity_spearman_of_rows_on_one_ray_is_null():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=8)
    x = rng.uniform(0.5, 3.0, size=(30, 1)) * direction  # every cosine is 1 up to rounding
    y = rng.normal(size=(30, 8))
    assert similarity_spearman(x, y) == {"rho": None, "items": 30, "pairs": 435, "seed": 0, "reason": "constant input"}
    assert similarity_spearman(y, y)["rho"] == pytest.approx(1.0)


# ---- 14. half precision ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_whiten_and_log_likelihood_of_half_tensors_compute_in_float32(dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 32)) * 0.05 + rng.normal(size=32) * 3  # CLIP-like: offset >> spread
    stats = fit_whitening(x)
    half = torch.tensor(x, dtype=dtype)
    exact = torch.tensor(whiten(half.double().numpy(), stats))
    y = whiten(half, stats)
    assert y.dtype == dtype
    resolution = torch.finfo(dtype).eps
    assert float((y.double() - exact).abs().max()) <= 2 * resolution * float(exact.abs().max())
    ll = log_likelihood(half, stats)
    exact_ll = torch.tensor(log_likelihood(half.double().numpy(), stats))
    assert ll.dtype == dtype
    assert float((ll.double() - exact_ll).abs().max()) <= 2 * resolution * float(exact_ll.abs().max())


# ---- 15. ties never agree ----------------------------------------------------------------------------


def test_collapsed_models_do_not_agree():
    collapsed = np.ones((20, 6))
    assert retrieval_agreement(collapsed, collapsed) == 0.0
    assert knn_overlap(collapsed, collapsed, k=5) == 0.0
    assert retrieval_agreement(collapsed, collapsed, collapsed, collapsed) == 0.0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6))
    assert retrieval_agreement(x, x) == 1.0 and knn_overlap(x, x, k=5) == 1.0
    assert retrieval_agreement(x, collapsed) == 0.0 and knn_overlap(x, collapsed, k=5) == 0.0


def test_a_tie_at_the_edge_of_a_neighbour_set_is_not_shared():
    # item 0's neighbours: 1 (cosine 1), then 2 and 3 tied; with k = 2 the second neighbour is a tie
    x = np.array([[1.0, 0.0, 0.0], [1.0, 0.01, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    from lakd.analysis.alignment import nearest_neighbours

    indices, tied = nearest_neighbours(x, 2)
    assert indices[0, ~tied[0]].tolist() == [1] and tied[0].sum() == 1


# ---- 16. two rows -----------------------------------------------------------------------------------


def test_analyze_on_two_rows_skips_the_conformity_fit():
    rng = np.random.default_rng(0)
    result = analyze({"image": rng.normal(size=(2, 8)), "text": rng.normal(size=(2, 8))}).to_dict()
    for modality in ("image", "text"):
        conformity = result["modalities"][modality]["conformity"]
        assert conformity["fit_vs_cosine_to_mean"] == {"skipped": "needs at least 3 rows, have 2"}
        assert conformity["distribution"]["n"] == 2
