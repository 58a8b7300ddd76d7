"""Data specs: one parser, options in the spec's query, a static table of source kinds."""

from __future__ import annotations

import pytest

from lakd.cli import DataFlags
from lakd.data import open_source
from lakd.data.base import MAX_IMAGE_BYTES
from lakd.data.sources import (
    SOURCE_KINDS,
    DataSpec,
    SourceKind,
    path_kinds,
    register_source,
    schemes,
    unregister_source,
    with_query,
)
from lakd.errors import LakdError


def test_parse_scheme_target_query():
    spec = DataSpec.parse("shapes:val?n=10&seed=3&n=12")
    assert (spec.scheme, spec.target, dict(spec.query)) == ("shapes", "val", {"n": "12", "seed": "3"})
    plain = DataSpec.parse("data/captions.csv?img_key=image&sep=tab&root=imgs")
    assert plain.scheme is None and plain.target == "data/captions.csv"
    assert dict(plain.query) == {"img_key": "image", "sep": "tab", "root": "imgs"}
    assert DataSpec.parse("C:/x.csv").scheme is None  # not a known scheme: a path


def test_with_query_adds_options_and_refuses_disagreement():
    assert with_query("c.csv", {"img_key": "image", "root": None}) == "c.csv?img_key=image"
    assert with_query("c.csv?root=a", {"sep": "\t"}) == "c.csv?root=a&sep=%09"
    assert with_query("c.csv?root=a", {"root": "a"}) == "c.csv?root=a"
    with pytest.raises(LakdError, match=r"c.csv\?root=a: option root='a' in the spec, but 'b' given as a flag"):
        with_query("c.csv?root=a", {"root": "b"})


def test_files_lists_what_exists(tmp_path):
    (tmp_path / "c.csv").write_text("filepath,title\n")
    (tmp_path / "imgs").mkdir()
    assert DataSpec.parse(f"{tmp_path / 'c.csv'}?root={tmp_path / 'imgs'}").files() == [
        tmp_path / "imgs",
        tmp_path / "c.csv",
    ]
    assert DataSpec.parse("shapes:val").files() == []


def test_static_table_has_unique_names_and_ordered_path_kinds():
    names = [kind.name for kind in SOURCE_KINDS]
    assert len(names) == len(set(names))
    assert set(schemes()) == {"shapes", "wds", "tv"}
    ordered = [kind.name for kind in path_kinds()]
    assert ordered[0] == "shapes-folder" and ordered[-1] == "image-folder"
    with pytest.raises(ValueError, match="already registered"):
        register_source(SourceKind("csv", "x:y", accepts="x:z"))
    with pytest.raises(ValueError, match="already registered"):
        register_source(SourceKind("other", "x:y", scheme="shapes"))
    with pytest.raises(ValueError, match="not both"):
        SourceKind("bad", "x:y", scheme="s", accepts="x:z")


def test_registered_kind_is_opened_and_removed():
    seen = {}

    def opener(target, query, options):
        seen.update(target=target, query=query)
        return ["item"]

    register_source(SourceKind("mine", opener, scheme="mine"))
    try:
        assert open_source("mine:abc?k=v") == ["item"]
        assert seen == {"target": "abc", "query": {"k": "v"}}
    finally:
        unregister_source("mine")
    with pytest.raises(LakdError, match="mine:abc: no such file or folder, and not a known data scheme"):
        open_source("mine:abc")


def test_reader_options_come_from_the_spec(tmp_path):
    with pytest.raises(LakdError, match=r"shapes:val\?root=x: unknown option 'root'"):
        open_source("shapes:val?root=x")
    csv = tmp_path / "c.csv"
    csv.write_text("filepath,title\na.png,x\n")
    with pytest.raises(LakdError, match=r"unknown option\(s\) colour \(accepted: img_key, caption_key, sep, root\)"):
        open_source(f"{csv}?colour=red")


def _flags(**values):
    base = {"image_root": None, "csv_img_key": None, "csv_caption_key": None, "csv_sep": None}
    return DataFlags({**base, "download": False, "allow_outside_root": False, "max_image_bytes": MAX_IMAGE_BYTES, **values})


def test_cli_flags_are_aliases_that_fill_the_spec():
    flags = _flags(image_root="imgs", csv_img_key="image", allow_outside_root=True)
    assert flags.spec("c.csv") == "c.csv?root=imgs&img_key=image"
    assert flags.options.allow_outside_root and not flags.options.download
    assert flags.options.max_image_bytes == MAX_IMAGE_BYTES == 64 * 1024 * 1024
    assert _flags(max_image_bytes=1000).options.max_image_bytes == 1000
    assert _flags().spec("shapes:val") == "shapes:val"
    with pytest.raises(LakdError, match="--image-root: only used with --data"):
        _flags(image_root="imgs").spec(None)
