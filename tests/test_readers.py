"""Real-data readers (lakd.data.readers) on small fixtures written by each test: CSV/TSV, COCO captions
JSON, image folders, webdataset tar shards and torchvision data sets, good input and bad."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from lakd.data import Item, Skipped, SourceOptions, describe_skipped, drop_skipped, open_source
from lakd.data.readers.imagefolder import looks_like_image_folder, open_image_folder
from lakd.data.readers.wds import expand_braces
from lakd.data.sources import with_query
from lakd.errors import LakdError

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def png_bytes(colour: str = "red", size: tuple[int, int] = (8, 6), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, COLOURS[colour] if mode == "RGB" else 128).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, colour: str = "red", **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(colour, **kwargs))
    return path


def write_csv(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def all_items(dataset) -> list[Item | Skipped]:
    return [dataset[i] for i in range(len(dataset))]


# ---------------------------------------------------------------- CSV


def test_csv_groups_captions_by_image_and_loads_images_lazily(tmp_path):
    spec = write_csv(
        tmp_path / "captions.csv",
        "filepath,title\nimg/a.png,a red square\nimg/b.png,a green square\nimg/a.png,red again\n",
    )
    dataset = open_source(spec)  # images do not exist yet: opening must not read them
    assert len(dataset) == 2 and dataset.source == spec and dataset.classnames is None
    write_png(tmp_path / "img/a.png", "red")
    write_png(tmp_path / "img/b.png", "green")
    first, second = all_items(dataset)
    assert first.id == "img/a.png" and first.captions == ["a red square", "red again"] and first.label is None
    assert second.id == "img/b.png" and second.captions == ["a green square"]
    assert first.image.mode == "RGB" and first.image.getpixel((0, 0)) == COLOURS["red"]
    assert second.image.getpixel((3, 3)) == COLOURS["green"]
    with pytest.raises(IndexError):
        dataset[2]


def test_csv_with_utf8_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefffilepath,title\na.png,caf\u00e9\n".encode())
    dataset = open_source(str(path))
    assert dataset.ids == ["a.png"] and dataset.captions == ["caf\u00e9"]


def test_tsv_detected_from_header_with_custom_keys_and_image_root(tmp_path):
    images = tmp_path / "elsewhere"
    write_png(images / "x.png", "blue", mode="L")
    spec = write_csv(tmp_path / "data.tsv", "image\tcaption, with comma\tother\nx.png\ta, b\t1\n")
    spec = with_query(spec, {"img_key": "image", "caption_key": "caption, with comma", "root": str(images)})
    (item,) = all_items(open_source(spec))
    assert item.captions == ["a, b"]
    assert item.image.mode == "RGB"


def test_csv_explicit_separator_and_quoted_captions(tmp_path):
    write_png(tmp_path / "a.png")
    spec = write_csv(tmp_path / "c.csv", 'filepath;title\na.png;"semi; colon"\n')
    (item,) = all_items(open_source(f"{spec}?sep=;"))
    assert item.captions == ["semi; colon"]


@pytest.mark.parametrize("name", ["tab", "\\t", "\t"])
def test_csv_separator_given_by_name(tmp_path, name):
    write_png(tmp_path / "a.png")
    spec = write_csv(tmp_path / "c.csv", "filepath\ttitle\na.png\ta, b\n")
    (item,) = all_items(open_source(with_query(spec, {"sep": name})))
    assert item.captions == ["a, b"]


def test_csv_missing_column_names_file_column_and_found_columns(tmp_path):
    spec = write_csv(tmp_path / "c.csv", "path,text\na.png,hello\n")
    with pytest.raises(
        LakdError, match=r"c\.csv: missing column\(s\) 'filepath', 'title'.*\['path', 'text'\]"
    ):
        open_source(spec)


@pytest.mark.parametrize(
    ("header", "sep", "looks"),
    [
        ("filepath\ttitle", ",", "tab"),
        ("filepath;title", None, "semicolon"),
        ("filepath,title", "\t", "comma"),
    ],
)
def test_csv_wrong_separator_gets_a_hint(tmp_path, header, sep, looks):
    spec = write_csv(tmp_path / "c.csv", f"{header}\nrow\n")
    with pytest.raises(LakdError, match=rf"missing column.*looks {looks}-separated.*\(sep={looks}\)"):
        open_source(with_query(spec, {"sep": sep}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("filepath,title\n", "no rows"),
        ("filepath,title\n,caption without image\nimage.png,\n", "no usable rows"),
    ],
)
def test_csv_without_usable_rows_is_an_error_naming_the_file(tmp_path, text, message):
    spec = write_csv(tmp_path / "c.csv", text)
    with pytest.raises(LakdError, match=rf"c\.csv: {message}"):
        open_source(spec)


def test_csv_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"filepath,title\na.png,fine\nb.png,caf\xe9 latin-1\n")
    with pytest.raises(LakdError, match=r"c\.csv: line 3: not valid UTF-8"):
        open_source(str(path))


def test_csv_malformed_rows_are_an_error(tmp_path):
    spec = write_csv(tmp_path / "c.csv", 'filepath,title\na.png,"unterminated\n')
    with pytest.raises(LakdError, match=r"c\.csv: cannot parse"):
        open_source(spec)


def test_csv_paths_escaping_the_root_are_refused_unless_allowed(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    outside = write_png(tmp_path / "secret.png")
    spec = write_csv(data / "c.csv", "filepath,title\nok/../fine.png,x\n../secret.png,y\n")
    with pytest.raises(
        LakdError, match=r"data row 2: image path '\.\./secret\.png' is outside.*\(use `allow_outside_root` to allow it\)"
    ):
        open_source(spec)
    spec_abs = write_csv(data / "abs.csv", f"filepath,title\n{outside},z\n")
    with pytest.raises(LakdError, match="is outside the image root"):
        open_source(spec_abs)
    allowed = open_source(spec, SourceOptions(allow_outside_root=True))
    assert isinstance(allowed[1], Item) and allowed[1].captions == ["y"]
    assert isinstance(allowed[0], Skipped)  # fine.png does not exist
    assert isinstance(open_source(spec_abs, SourceOptions(allow_outside_root=True))[0], Item)


def test_csv_absolute_path_inside_the_root_is_accepted(tmp_path):
    image = write_png(tmp_path / "sub" / "in.png")
    spec = write_csv(tmp_path / "c.csv", f"filepath,title\n{image},inside\n")
    assert isinstance(open_source(spec)[0], Item)


def test_csv_missing_image_root_is_an_error(tmp_path):
    spec = write_csv(tmp_path / "c.csv", "filepath,title\na.png,x\n")
    with pytest.raises(LakdError, match="image root .*nowhere is not a folder"):
        open_source(with_query(spec, {"root": str(tmp_path / "nowhere")}))


def test_unreadable_images_become_skipped_items(tmp_path):
    write_png(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"this is not an image at all")
    (tmp_path / "cut.png").write_bytes(png_bytes(size=(64, 64))[:60])
    (tmp_path / "folder.png").mkdir()
    names = ["good", "missing", "empty", "text", "cut", "folder"]
    spec = write_csv(tmp_path / "c.csv", "filepath,title\n" + "".join(f"{n}.png,{n}\n" for n in names))
    outputs = all_items(open_source(spec))
    items, skipped = drop_skipped(outputs)
    assert [item.id for item in items] == ["good.png"]
    reasons = {Path(s.path).stem: s.reason for s in skipped}
    assert reasons["missing"] == "missing file"
    assert reasons["empty"] == "zero-byte file"
    assert reasons["text"].startswith("not an image")
    assert reasons["cut"].startswith(("corrupt image", "not an image"))
    assert reasons["folder"] == "a folder, not a file"
    assert all(s.id == f"{Path(s.path).stem}.png" for s in skipped)
    assert describe_skipped(skipped).startswith("skipped 5 unreadable image(s):")


def test_csv_rejects_spec_options(tmp_path):
    spec = write_csv(tmp_path / "c.csv", "filepath,title\na.png,x\n")
    with pytest.raises(LakdError, match="unknown option"):
        open_source(spec + "?n=3")


# ---------------------------------------------------------------- COCO


def coco(images, annotations, **extra) -> dict:
    return {"info": {}, "images": images, "annotations": annotations, **extra}


def write_json(path: Path, obj) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


COCO_OK = coco(
    [{"id": 42, "file_name": "a.png"}, {"id": 7, "file_name": "b.png"}, {"id": 9, "file_name": "none.png"}],
    [
        {"id": 1, "image_id": 7, "caption": "green one "},
        {"id": 2, "image_id": 42, "caption": "red one"},
        {"id": 3, "image_id": 42, "caption": "red two"},
        {"id": 4, "image_id": 9, "caption": "  "},
    ],
)


def test_coco_keeps_all_captions_per_image_with_json_folder_as_default_root(tmp_path):
    write_png(tmp_path / "a.png", "red")
    write_png(tmp_path / "b.png", "green")
    spec = write_json(tmp_path / "captions.json", COCO_OK)
    dataset = open_source(spec)
    assert [dataset[i].id for i in range(len(dataset))] == ["42", "7"]  # image 9 has no caption
    assert dataset[0].captions == ["red one", "red two"] and dataset[1].captions == ["green one"]
    assert dataset[0].image.getpixel((0, 0)) == COLOURS["red"]
    assert dataset.classnames is None and dataset.source == spec


def test_coco_uses_image_root_option(tmp_path):
    write_png(tmp_path / "val2017" / "a.png", "red")
    spec = write_json(tmp_path / "annotations" / "captions.json", COCO_OK)
    with_root = open_source(f"{spec}?root={tmp_path / 'val2017'}")
    assert isinstance(with_root[0], Item)
    assert isinstance(open_source(spec)[0], Skipped)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"annotations": []}, "top level has no 'images'"),
        ({"images": []}, "top level has no 'annotations'"),
        (coco([{"id": 1}], []), r"images\[0\] has no 'file_name'"),
        (coco([{"file_name": "a.png"}], []), r"images\[0\] has no 'id'"),
        (coco([{"id": 1, "file_name": "a.png"}], [{"image_id": 1}]), r"annotations\[0\] has no 'caption'"),
        (coco([{"id": 1, "file_name": "a.png"}], [{"caption": "x"}]), r"annotations\[0\] has no 'image_id'"),
        (
            coco([{"id": 1, "file_name": "a.png"}], [{"image_id": 1, "caption": 5}]),
            r"caption has an unexpected",
        ),
        (coco({"id": 1}, []), "images has an unexpected type"),
        (coco([{"id": 1, "file_name": "a.png"}], [{"image_id": 2, "caption": "x"}]), "2 is not in 'images'"),
        (
            coco([{"id": 1, "file_name": "a"}, {"id": 1, "file_name": "b"}], []),
            r"images\[1\]\.id 1 appears twice",
        ),
        (coco([{"id": 1, "file_name": "a.png"}], []), "no usable rows"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_coco_bad_fields_name_the_file_and_field(tmp_path, document, field):
    spec = write_json(tmp_path / "bad.json", document)
    with pytest.raises(LakdError, match=rf"bad\.json: .*{field}"):
        open_source(spec)


def test_coco_malformed_json_and_bad_encoding(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [\n{"id": 1,, }', encoding="utf-8")
    with pytest.raises(LakdError, match=r"broken\.json: malformed JSON at line 2"):
        open_source(str(broken))
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"images": [], "annotations": [], "x": "caf\xe9"}')
    with pytest.raises(LakdError, match=r"latin\.json: not valid UTF-8"):
        open_source(str(latin))


def test_coco_file_names_escaping_the_root_are_refused_unless_allowed(tmp_path):
    write_png(tmp_path / "outside.png")
    document = coco([{"id": 5, "file_name": "../outside.png"}], [{"image_id": 5, "caption": "x"}])
    spec = write_json(tmp_path / "ann" / "c.json", document)
    with pytest.raises(LakdError, match=r"c\.json: file_name '\.\./outside\.png' of image 5 is outside"):
        open_source(spec)
    assert isinstance(open_source(spec, SourceOptions(allow_outside_root=True))[0], Item)


def test_tv_coco_captions_reads_annotation_file_and_root(tmp_path):
    write_png(tmp_path / "images" / "a.png", "red")
    write_png(tmp_path / "images" / "b.png", "green")
    ann = write_json(tmp_path / "captions.json", COCO_OK)
    spec = f"tv:CocoCaptions?root={tmp_path / 'images'}&ann={ann}"
    dataset = open_source(spec)
    assert dataset.source == spec
    assert [item.captions for item in all_items(dataset)] == [["red one", "red two"], ["green one"]]
    with pytest.raises(LakdError, match="needs root=IMAGE_DIR and ann=CAPTIONS_JSON"):
        open_source(f"tv:CocoCaptions?root={tmp_path}")
    with pytest.raises(LakdError, match="annotation file not found"):
        open_source(f"tv:CocoCaptions?root={tmp_path}&ann={tmp_path / 'nope.json'}")


# ---------------------------------------------------------------- image folder


def make_image_folder(root: Path) -> Path:
    write_png(root / "golden_retriever" / "1.png", "red")
    write_png(root / "golden_retriever" / "deeper" / "2.png", "red")
    write_png(root / "cat" / "3.png", "green")
    (root / "cat" / "notes.txt").write_text("not an image")
    write_png(root / ".hidden" / "4.png")
    return root


def test_image_folder_classes_labels_and_prompts(tmp_path):
    root = make_image_folder(tmp_path / "zs")
    dataset = open_source(str(root))
    assert dataset.classnames == ["cat", "golden retriever"]
    items = all_items(dataset)
    assert [(i.id, i.label) for i in items] == [
        ("cat/3.png", 0),
        ("golden_retriever/1.png", 1),
        ("golden_retriever/deeper/2.png", 1),
    ]
    assert items[1].captions == ["a photo of a golden retriever."]
    assert items[0].image.getpixel((1, 1)) == COLOURS["green"]


def test_image_folder_corrupt_image_is_skipped(tmp_path):
    root = make_image_folder(tmp_path / "zs")
    (root / "cat" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    outputs = all_items(open_source(str(root)))
    skipped = [o for o in outputs if isinstance(o, Skipped)]
    assert [s.id for s in skipped] == ["cat/bad.jpg"] and len(outputs) == 4


def test_image_folder_without_images_is_an_error_naming_the_source(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LakdError, match=r"empty: not a recognised data source"):
        open_source(str(empty))
    (empty / "cls_a").mkdir()
    (empty / "cls_a" / "readme.txt").write_text("x")
    assert not looks_like_image_folder(empty)
    with pytest.raises(LakdError, match=r"empty: no usable rows"):
        open_image_folder(str(empty), {}, SourceOptions())
    with pytest.raises(LakdError, match=r"flat: no class subfolders"):
        (tmp_path / "flat").mkdir()
        open_image_folder(str(tmp_path / "flat"), {}, SourceOptions())


def test_folder_with_a_csv_is_not_an_image_folder(tmp_path):
    root = make_image_folder(tmp_path / "exported")
    assert looks_like_image_folder(root)
    (root / "captions.csv").write_text("filepath,title\n")
    assert not looks_like_image_folder(root)


# ---------------------------------------------------------------- webdataset


def write_shard(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_shards(folder: Path) -> None:
    write_shard(
        folder / "shard-000.tar",
        {
            "s0/a.jpg": png_bytes("red"),  # PNG bytes under .jpg: decoded by content
            "s0/a.txt": b"a red thing",
            "s0/a.cls": b"2",
            "b.png": png_bytes("green"),
            "b.json": json.dumps({"caption": ["green", "verdant"]}).encode(),
            "meta_only.json": b"{}",
        },
    )
    write_shard(
        folder / "shard-001.tar",
        {
            "c.webp": b"",
            "c.txt": b"x",
            "d.PNG": png_bytes("blue"),
            "d.txt": "bl\u00fce".encode(),
            "e.seg.png": png_bytes(),  # webdataset key "e", field "seg.png": not an image field
            "e.txt": b"e",
        },
    )


def test_expand_braces():
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}/{8..10}") == ["a/8", "a/9", "a/10", "b/8", "b/9", "b/10"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(LakdError, match="empty range"):
        expand_braces("{5..1}")


def test_webdataset_random_access_over_brace_pattern(tmp_path):
    make_shards(tmp_path)
    spec = f"wds:{tmp_path}/shard-{{000..001}}.tar"
    dataset = open_source(spec)
    assert dataset.source == spec and dataset.classnames is None
    assert dataset.ids == ["s0/a", "b", "c", "d"]
    last, first = dataset[3], dataset[0]  # any order
    assert last.captions == ["bl\u00fce"] and last.image.getpixel((0, 0)) == COLOURS["blue"]
    assert first.captions == ["a red thing"] and first.label == 2 and first.image.size == (8, 6)
    assert dataset[1].captions == ["green", "verdant"] and dataset[1].label is None
    skipped = dataset[2]
    assert (
        isinstance(skipped, Skipped)
        and skipped.reason == "zero-byte file"
        and skipped.path.endswith("c.webp")
    )
    with pytest.raises(IndexError):
        dataset[4]
    clone = pickle.loads(pickle.dumps(dataset))  # DataLoader workers get a copy
    assert clone[1].captions == ["green", "verdant"]


def test_webdataset_glob_and_single_path(tmp_path):
    make_shards(tmp_path)
    assert len(open_source(f"wds:{tmp_path}/shard-*.tar")) == 4
    assert len(open_source(f"wds:{tmp_path}/shard-001.tar")) == 2
    with pytest.raises(LakdError, match="matches no files"):
        open_source(f"wds:{tmp_path}/nothing-*.tar")


def test_webdataset_missing_shard_names_pattern_and_file(tmp_path):
    make_shards(tmp_path)
    pattern = f"{tmp_path}/shard-{{000..002}}.tar"
    with pytest.raises(LakdError, match=r"wds:.*shard-\{000\.\.002\}\.tar: shard .*shard-002\.tar not found"):
        open_source(f"wds:{pattern}")


def test_webdataset_sample_problems_become_skipped(tmp_path):
    write_shard(
        tmp_path / "s.tar",
        {
            "bad.jpg": b"\x89PNG\r\n\x1a\n broken",
            "bad.txt": b"caption",
            "nocap.png": png_bytes(),
            "latin.png": png_bytes(),
            "latin.txt": b"caf\xe9",
            "badcls.png": png_bytes(),
            "badcls.txt": b"ok",
            "badcls.cls": b"seven",
        },
    )
    outputs = all_items(open_source(f"wds:{tmp_path}/s.tar"))
    assert all(isinstance(o, Skipped) for o in outputs)
    reasons = {o.id: o.reason for o in outputs}
    assert reasons["bad"].startswith(("corrupt image", "not an image"))
    assert reasons["nocap"].startswith("no caption")
    assert reasons["latin"].startswith("unreadable caption") and reasons["badcls"].startswith(
        "unreadable caption"
    )


def test_webdataset_truncated_shard_member_is_skipped(tmp_path):
    shard = write_shard(tmp_path / "s.tar", {"a.png": png_bytes(size=(300, 300)), "a.txt": b"x"})
    dataset = open_source(f"wds:{shard}")
    shard.write_bytes(shard.read_bytes()[:700])  # cut after indexing
    skipped = dataset[0]
    assert isinstance(skipped, Skipped) and skipped.reason.startswith("truncated shard")
    shard.unlink()
    assert dataset[0].reason.startswith("unreadable shard")


def test_webdataset_repeated_keys_across_shards_get_shard_prefix(tmp_path):
    write_shard(tmp_path / "a.tar", {"k.png": png_bytes(), "k.txt": b"one"})
    write_shard(
        tmp_path / "b.tar", {"k.png": png_bytes(), "k.txt": b"two", "u.png": png_bytes(), "u.txt": b"3"}
    )
    dataset = open_source(f"wds:{tmp_path}/{{a,b}}.tar")
    assert dataset.ids == ["a.tar/k", "b.tar/k", "u"]


def test_webdataset_bad_shards_are_errors(tmp_path):
    (tmp_path / "junk.tar").write_bytes(b"not a tar file" * 100)
    with pytest.raises(LakdError, match=r"junk\.tar: not a readable uncompressed tar shard"):
        open_source(f"wds:{tmp_path}/junk.tar")
    plain = write_shard(tmp_path / "p.tar", {"a.png": png_bytes(), "a.txt": b"x"})
    (tmp_path / "z.tar.gz").write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(LakdError, match=r"z\.tar\.gz: not a readable uncompressed tar shard"):
        open_source(f"wds:{tmp_path}/z.tar.gz")
    write_shard(tmp_path / "text.tar", {"a.txt": b"caption without image"})
    with pytest.raises(LakdError, match=r"wds:.*text\.tar: no usable rows"):
        open_source(f"wds:{tmp_path}/text.tar")


# ---------------------------------------------------------------- torchvision


def test_tv_fakedata_items_with_classnames():
    dataset = open_source("tv:FakeData?size=5&image_size=3,12,10&num_classes=3")
    assert len(dataset) == 5 and dataset.classnames == ["class 0", "class 1", "class 2"]
    item = dataset[4]
    assert item.id == "4" and item.image.size == (10, 12) and item.image.mode == "RGB"
    assert item.label in (0, 1, 2) and item.captions == [f"a photo of a class {item.label}."]


def test_tv_cifar10_without_download_is_an_error_mentioning_download(tmp_path):
    with pytest.raises(LakdError, match=r"tv:CIFAR10\?root=.*not found.*use `download` to fetch it"):
        open_source(f"tv:CIFAR10?root={tmp_path}&split=test")
    assert list(tmp_path.iterdir()) == []  # nothing was fetched


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tv:CIFAR11?root=x", "no torchvision data set named 'CIFAR11' .did you mean CIFAR10"),
        ("tv:utils?root=x", "no torchvision data set named .utils."),
        ("tv:VisionDataset?root=x", "no torchvision data set named .VisionDataset."),
        ("tv:CIFAR10", r"missing option\(s\) root \(write tv:CIFAR10\?root=\.\.\.\)"),
        ("tv:CIFAR10?root=x&split=val", "split='val', expected train or test"),
        ("tv:CIFAR10?root=x&colour=1", r"unknown option\(s\) colour \(accepted: root, train\)"),
        ("tv:CIFAR10?root=x&transform=y", r"unknown option\(s\) transform"),
        ("tv:FakeData?size=many", "option size='many'"),
        ("tv:FakeData?size=0", "no usable rows"),
    ],
)
def test_tv_bad_specs(spec, message):
    with pytest.raises(LakdError, match=message):
        open_source(spec)


def test_tv_image_folder_and_caption_targets(tmp_path):
    root = make_image_folder(tmp_path / "zs")
    shutil.rmtree(root / ".hidden")  # torchvision's ImageFolder would take it as a class
    (root / "cat" / "bad.png").write_bytes(b"garbage")
    folder = open_source(f"tv:ImageFolder?root={root}")
    assert folder.classnames == ["cat", "golden_retriever"]
    outputs = all_items(folder)
    assert [o.label for o in outputs if isinstance(o, Item)] == [0, 1, 1]
    bad = [
        o for o in outputs if isinstance(o, Skipped)
    ]  # order: cat/3.png, cat/bad.png, golden_retriever/...
    assert [o.id for o in bad] == ["1"] and bad[0].reason.startswith("not an image")

    write_png(tmp_path / "flickr" / "1.jpg", "blue")
    ann = tmp_path / "tokens.txt"
    ann.write_text("1.jpg#0\ta blue thing\n1.jpg#1\tall blue\n", encoding="utf-8")
    flickr = open_source(f"tv:Flickr30k?root={tmp_path / 'flickr'}&ann_file={ann}")
    (item,) = all_items(flickr)
    assert item.captions == ["a blue thing", "all blue"] and item.label is None and flickr.classnames is None
