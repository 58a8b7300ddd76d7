"""ModelSpec.parse: the one parser of every model-spec form (no file read, no heavy import)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lakd.errors import LakdError
from lakd.models.specs import ModelSpec, list_lakd_configs


@pytest.mark.parametrize(
    ("text", "scheme", "target", "tag", "display"),
    [
        ("lakd:tiny-vit", "lakd", "tiny-vit", None, "tiny-vit"),
        ("open_clip:ViT-B-16", "open_clip", "ViT-B-16", None, "ViT-B-16"),
        ("open_clip:ViT-B/16@laion2b_s34b_b88k", "open_clip", "ViT-B-16", "laion2b_s34b_b88k", "ViT-B-16@laion2b_s34b_b88k"),
        ("local-dir:runs/x/student-local-dir/", "local-dir", "runs/x/student-local-dir/", None, "student-local-dir"),
        ("hf-hub:laion/CLIP-ViT-B-32", "hf-hub", "laion/CLIP-ViT-B-32", None, "CLIP-ViT-B-32"),
        ("runs/x/step_000010.pt", "file", "runs/x/step_000010.pt", None, "step_000010"),
        ("w.SAFETENSORS", "file", "w.SAFETENSORS", None, "w"),
    ],
)
def test_parse_every_form(text, scheme, target, tag, display):
    spec = ModelSpec.parse(text)
    assert (spec.scheme, spec.target, spec.tag, spec.display_name, str(spec)) == (
        scheme,
        target,
        tag,
        display,
        text,
    )


def test_random_init_and_config_names():
    assert ModelSpec.parse("lakd:tiny-vit").random_init
    assert ModelSpec.parse("lakd:tiny-vit").config_name == "lakd-tiny-vit"
    assert ModelSpec.parse("open_clip:RN50").random_init
    assert not ModelSpec.parse("open_clip:RN50@openai").random_init
    assert ModelSpec.parse("open_clip:RN50@openai").config_name == "RN50"
    assert ModelSpec.parse("a.pt").config_name is None and not ModelSpec.parse("a.pt").random_init


@pytest.mark.parametrize("text", ["", "model", "folder/", "lakd:", "open_clip:", "foo:bar", "ckpt.txt"])
def test_not_a_spec_is_one_line_error(text):
    with pytest.raises(LakdError, match="not a model spec|names no") as err:
        ModelSpec.parse(text)
    assert "\n" not in str(err.value)


def test_files_and_check(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    missing = ModelSpec.parse(str(ckpt))
    assert missing.files() == []
    with pytest.raises(LakdError, match="no such checkpoint file"):
        missing.check()
    ckpt.write_bytes(b"x")
    (tmp_path / "m.safetensors.json").write_text("{}")
    assert ModelSpec.parse(str(ckpt)).files() == [ckpt, tmp_path / "m.safetensors.json"]
    ModelSpec.parse(str(ckpt)).check()
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text("{}")
    (folder / "open_clip_model.safetensors").write_bytes(b"w")
    assert [p.name for p in ModelSpec.parse(f"local-dir:{folder}").files()] == [
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    with pytest.raises(LakdError, match="no such folder"):
        ModelSpec.parse(f"local-dir:{tmp_path / 'nope'}").check()
    with pytest.raises(LakdError, match="unknown lakd config"):
        ModelSpec.parse("lakd:huge").check()
    for name in list_lakd_configs():
        ModelSpec.parse(f"lakd:{name}").check()


def test_benchmark_names():
    assert ModelSpec.parse("open_clip:ViT-B-16@laion2b_s34b_b88k").benchmark_names() == (
        "ViT-B-16",
        "laion2b_s34b_b88k",
    )
    assert ModelSpec.parse("ckpt.pt").benchmark_names("ViT-B-32") == ("ViT-B-32", "ckpt.pt")
    assert ModelSpec.parse("lakd:tiny-vit").benchmark_names() == ("lakd:tiny-vit", "")


def test_parsing_imports_neither_torch_nor_open_clip():
    code = (
        "import sys; from lakd.models.specs import ModelSpec; ModelSpec.parse('open_clip:RN50@openai'); "
        "print(any(m in sys.modules for m in ('torch', 'open_clip')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
