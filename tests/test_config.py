"""lakd.config: strict dataclass configs from YAML files, mappings and dotted overrides."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
import yaml

from lakd.config import apply_overrides, dump_yaml, from_mapping, load_config, load_yaml, to_mapping
from lakd.errors import LakdError


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclass
class Optim:
    lr: float = 1e-3
    lr_scheduler: Literal["cosine", "constant"] = "cosine"
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self):
        if self.lr <= 0:
            raise LakdError(f"lr: must be positive, got {self.lr}")


@dataclass
class Teacher:
    model: str
    kind: Literal["live", "cached"] = "live"
    embeddings: Path | None = None


@dataclass
class Run:
    name: str
    teacher: Teacher
    optim: Optim = field(default_factory=Optim)
    recipe: str | dict[str, Any] = "fd"
    weights: dict[str, float] = field(default_factory=lambda: {"kd": 1.0})
    epochs: int = 1
    tags: list[str] = field(default_factory=list)
    eval: Optim | None = None


@dataclass
class Kinds:
    flag: bool = False
    count: int = 0
    scale: float = 1.0
    text: str = ""
    where: Path = Path("out")
    maybe: Optional[int] = None  # noqa: UP045 (the old spelling is supported too)
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = ()
    pair: tuple[str, float] = ("x", 0.0)
    items: list[int] = field(default_factory=list)
    table: dict[str, float] = field(default_factory=dict)
    anything: Any = None
    color: Color = Color.RED
    number: int | float = 0
    switch: bool | int = 0


def run(**extra) -> dict[str, Any]:
    return {"name": "r", "teacher": {"model": "lakd:tiny-vit"}, **extra}


def message(excinfo) -> str:
    return str(excinfo.value)


# ------------------------------------------------------------------------------ from_mapping


def test_nested_sections_take_defaults():
    cfg = from_mapping(Run, run())
    assert cfg == Run(name="r", teacher=Teacher(model="lakd:tiny-vit"))
    assert cfg.optim == Optim(lr=1e-3, lr_scheduler="cosine", betas=(0.9, 0.999))
    assert cfg.weights == {"kd": 1.0} and cfg.tags == [] and cfg.eval is None
    assert from_mapping(Run, run()).tags is not cfg.tags  # default_factory: a fresh list each time


def test_every_supported_type():
    cfg = from_mapping(
        Kinds,
        {
            "flag": True,
            "count": 3,
            "scale": 2,
            "text": "hi",
            "where": "a/b.txt",
            "maybe": 5,
            "mode": "b",
            "sizes": [1, 2, 3],
            "pair": ["y", 1],
            "items": [4, 5],
            "table": {"kd": 0.5, "fd": 2},
            "anything": {"free": [1, "form"]},
            "color": "green",
            "number": 2.5,
            "switch": True,
        },
    )
    assert cfg == Kinds(
        flag=True,
        count=3,
        scale=2.0,
        text="hi",
        where=Path("a/b.txt"),
        maybe=5,
        mode="b",
        sizes=(1, 2, 3),
        pair=("y", 1.0),
        items=[4, 5],
        table={"kd": 0.5, "fd": 2.0},
        anything={"free": [1, "form"]},
        color=Color.GREEN,
        number=2.5,
        switch=True,
    )
    assert type(cfg.scale) is float and type(cfg.pair[1]) is float and type(cfg.table["fd"]) is float
    assert isinstance(cfg.where, Path) and isinstance(cfg.sizes, tuple)
    assert from_mapping(Kinds, {"maybe": None}).maybe is None


def test_unions_try_members_in_order():
    assert type(from_mapping(Kinds, {"number": 3}).number) is int  # int | float: an int stays an int
    assert from_mapping(Kinds, {"switch": 1}).switch == 1
    assert from_mapping(Kinds, {"switch": True}).switch is True
    assert from_mapping(Kinds, {"color": "RED"}).color is Color.RED  # enums also by name


@pytest.mark.parametrize(
    "data, error",
    [
        ({"count": True}, "cfg.yaml: count: expected an integer, got true"),
        ({"count": 3.0}, "cfg.yaml: count: expected an integer, got 3.0"),
        ({"count": "3"}, "cfg.yaml: count: expected an integer, got '3'"),
        ({"scale": False}, "cfg.yaml: scale: expected a number, got false"),
        ({"scale": "fast"}, "cfg.yaml: scale: expected a number, got 'fast'"),
        ({"flag": 1}, "cfg.yaml: flag: expected true or false, got 1"),
        ({"text": 3}, "cfg.yaml: text: expected a string, got 3"),
        ({"where": ""}, "cfg.yaml: where: expected a path, got ''"),
        ({"maybe": "x"}, "cfg.yaml: maybe: expected an integer or null, got 'x'"),
        ({"mode": "c"}, "cfg.yaml: mode: expected 'a' or 'b', got 'c'"),
        ({"color": "blue"}, "cfg.yaml: color: expected 'red' or 'green', got 'blue'"),
        ({"sizes": 3}, "cfg.yaml: sizes: expected a list, got 3"),
        ({"sizes": [1, "two"]}, "cfg.yaml: sizes[1]: expected an integer, got 'two'"),
        ({"pair": ["y"]}, "cfg.yaml: pair: expected a list of 2 items, got ['y']"),
        ({"items": {"a": 1}}, "cfg.yaml: items: expected a list, got {'a': 1}"),
        ({"table": [1]}, "cfg.yaml: table: expected a mapping, got [1]"),
        ({"table": {"kd": "x"}}, "cfg.yaml: table.kd: expected a number, got 'x'"),
        ({"table": {1: 2.0}}, "cfg.yaml: table: expected a string, got 1"),
        ({"number": True}, "cfg.yaml: number: expected an integer or a number, got true"),
        ({"switch": 1.5}, "cfg.yaml: switch: expected true or false or an integer, got 1.5"),
    ],
)
def test_type_errors_name_key_expected_type_and_value(data, error):
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Kinds, data, source="cfg.yaml")
    assert message(excinfo) == error


def test_long_values_are_shortened_in_errors():
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Kinds, {"count": "x" * 100})
    assert message(excinfo) == "config: count: expected an integer, got '" + "x" * 56 + "..."


def test_union_of_name_or_mapping():
    assert from_mapping(Run, run(recipe="mfd")).recipe == "mfd"
    recipe = {"fd": 1.0, "kd": {"weight": 2, "temperature": 4}}
    assert from_mapping(Run, run(recipe=recipe)).recipe == recipe
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, run(recipe=3))
    assert message(excinfo) == "config: recipe: expected a string or a mapping, got 3"
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, run(recipe=["fd"]))
    assert message(excinfo) == "config: recipe: expected a string or a mapping, got ['fd']"
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, run(recipe={1: 2}))  # only the mapping member could read it: its error
    assert message(excinfo) == "config: recipe: expected a string, got 1"


def test_optional_section():
    assert from_mapping(Run, run(eval=None)).eval is None
    assert from_mapping(Run, run(eval={"lr": 0.5})).eval == Optim(lr=0.5)
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, run(eval={"lr": 0.5, "bettas": [0, 0]}))
    assert message(excinfo) == "config: unknown key 'eval.bettas' (did you mean 'eval.betas'?)"
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, run(eval=3))
    assert message(excinfo) == "config: eval: expected a mapping or null, got 3"
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, run(optim=None))
    assert message(excinfo) == "config: optim: expected a mapping, got null"


def test_unknown_keys_at_any_depth():
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, run(optim={"lr_sheduler": "constant"}))
    assert message(excinfo) == "config: unknown key 'optim.lr_sheduler' (did you mean 'optim.lr_scheduler'?)"
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, run(epoch=3), source="run.yaml")
    assert message(excinfo) == "run.yaml: unknown key 'epoch' (did you mean 'epochs'?)"
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, run(teacher={"model": "m", "zzz": 1}))
    assert message(excinfo) == "config: unknown key 'teacher.zzz' (known keys: model, kind, embeddings)"


def test_missing_required_keys():
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, {"name": "r"})
    assert message(excinfo) == "config: missing key 'teacher'"
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, {"name": "r", "teacher": {"kind": "cached"}}, source="run.yaml")
    assert message(excinfo) == "run.yaml: missing key 'teacher.model'"
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, [1, 2])
    assert message(excinfo) == "config: expected a mapping, got [1, 2]"


def test_post_init_errors_name_their_section():
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Run, run(optim={"lr": -1}), source="run.yaml")
    assert message(excinfo) == "run.yaml: optim: lr: must be positive, got -1.0"
    with pytest.raises(LakdError) as excinfo:
        from_mapping(Optim, {"lr": 0})
    assert message(excinfo) == "config: lr: must be positive, got 0.0"


def test_dataclass_instances_are_taken_as_they_are():
    teacher = Teacher(model="m", kind="cached")
    assert from_mapping(Run, {"name": "r", "teacher": teacher}).teacher is teacher


PlainOptim = dataclasses.make_dataclass(  # annotations as type objects, not strings
    "PlainOptim", [("lr", float, 0.1), ("steps", tuple[int, ...], ()), ("name", str | None, None)]
)


def test_dataclasses_with_type_object_annotations():
    cfg = from_mapping(PlainOptim, {"lr": 1, "steps": [1, 2]})
    assert cfg == PlainOptim(lr=1.0, steps=(1, 2), name=None) and type(cfg.lr) is float
    with pytest.raises(LakdError) as excinfo:
        from_mapping(PlainOptim, {"name": True})
    assert message(excinfo) == "config: name: expected a string or null, got true"


@dataclass
class Unsupported:
    values: set[int] = field(default_factory=set)


def test_unsupported_field_types_are_programming_errors():
    with pytest.raises(TypeError, match=r"values: unsupported config field type set\[int\]"):
        from_mapping(Unsupported, {"values": [1]})


def test_from_mapping_needs_a_dataclass():
    with pytest.raises(TypeError):
        from_mapping(dict, {})


# ---------------------------------------------------------------------------------- overrides


def test_overrides_are_parsed_as_yaml_scalars():
    data = apply_overrides(
        run(),
        [
            "optim.lr=3e-4",
            "optim.betas=[0.8, 0.9]",
            "epochs=2",
            "teacher.kind=cached",
            "teacher.embeddings=dir",
            "teacher.embeddings=",  # an empty value is null
            "recipe={fd: 1, kd: 0.5}",
            "tags=['1', two]",
            "name='3'",
        ],
        cls=Run,
    )
    assert data["optim"] == {"lr": 3e-4, "betas": [0.8, 0.9]} and type(data["optim"]["lr"]) is float
    assert data["epochs"] == 2 and data["name"] == "3"
    assert data["teacher"] == {"model": "lakd:tiny-vit", "kind": "cached", "embeddings": None}
    assert data["recipe"] == {"fd": 1, "kd": 0.5} and data["tags"] == ["1", "two"]
    assert apply_overrides({}, ["a=true", "b=1E5", "c=1.5e-3", "d=-2e3", "e=on_disk"]) == {
        "a": True,
        "b": 1e5,
        "c": 1.5e-3,
        "d": -2e3,
        "e": "on_disk",
    }


def test_overrides_do_not_change_their_input():
    data = run(optim={"lr": 0.1})
    apply_overrides(data, ["optim.lr=0.2", "teacher.kind=cached"], cls=Run)
    assert data == run(optim={"lr": 0.1})


def test_overrides_create_keys_in_mappings_and_absent_sections():
    data = apply_overrides(run(weights={"kd": 1.0}), ["weights.fd=0.5", "eval.lr=0.2", "optim.lr=1"], cls=Run)
    assert data["weights"] == {"kd": 1.0, "fd": 0.5}
    assert data["eval"] == {"lr": 0.2} and data["optim"] == {"lr": 1}
    # an absent union field that allows a mapping becomes one, as if the file said `recipe: {fd: 2}`
    assert apply_overrides(run(), ["recipe.fd=2", "recipe.kd.weight=1"], cls=Run)["recipe"] == {
        "fd": 2,
        "kd": {"weight": 1},
    }
    assert apply_overrides(run(eval=None), ["eval.lr=0.3"], cls=Run)["eval"] == {"lr": 0.3}
    assert apply_overrides({"a": {"b": 1}}, ["a.c.d=2"]) == {"a": {"b": 1, "c": {"d": 2}}}  # no class


def test_override_into_a_string_valued_union_is_an_error():
    with pytest.raises(LakdError) as excinfo:
        apply_overrides(run(recipe="fd"), ["recipe.fd=2"], cls=Run)
    assert (
        message(excinfo)
        == "override 'recipe.fd=2': 'recipe' is 'fd', not a mapping (replace it whole: recipe={...})"
    )
    assert apply_overrides(run(recipe="fd"), ["recipe={fd: 2}"], cls=Run)["recipe"] == {"fd": 2}


@pytest.mark.parametrize(
    "override, error",
    [
        ("optim.lr_sheduler=cosine", "unknown key 'optim.lr_sheduler' (did you mean 'optim.lr_scheduler'?)"),
        ("epoch=3", "unknown key 'epoch' (did you mean 'epochs'?)"),
        ("eval.bettas=[0, 1]", "unknown key 'eval.bettas' (did you mean 'eval.betas'?)"),
        ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
        ("epochs=true", "epochs: expected an integer, got true"),
        ("teacher.kind=remote", "teacher.kind: expected 'live' or 'cached', got 'remote'"),
        ("teacher={kind: live}", "missing key 'teacher.model'"),
        ("optim.lr.max=1", "'optim.lr' takes a number, not sub-keys"),
        ("tags.first=a", "'tags' takes a list, not sub-keys"),
        ("weights.kd=high", "weights.kd: expected a number, got 'high'"),
        ("weights.kd=", "weights.kd: expected a number, got null"),
        ("optim", "expected KEY=VALUE"),
        ("=3", "empty key"),
        (" = 3", "empty key"),
        ("optim..lr=3", "empty part in key 'optim..lr'"),
        ("optim.=3", "empty part in key 'optim.'"),
        (
            "tags=[a,",
            "invalid YAML value (line 1, column 4: expected the node content, but found '<stream end>')",
        ),
    ],
)
def test_override_errors_name_the_override(override, error):
    with pytest.raises(LakdError) as excinfo:
        apply_overrides(run(), [override], cls=Run)
    assert message(excinfo) == f"override {override!r}: {error}"


def test_overrides_must_be_a_list():
    with pytest.raises(TypeError):
        apply_overrides({}, "epochs=2", cls=Run)


# --------------------------------------------------------------------------------------- YAML


def write(tmp_path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_yaml_reads_plain_data(tmp_path):
    path = write(tmp_path, "name: r\noptim:\n  lr: 1e-3\n  steps: [1, 2]\nfloat: 1.0e+3\n")
    assert load_yaml(path) == {"name": "r", "optim": {"lr": 1e-3, "steps": [1, 2]}, "float": 1e3}
    assert type(load_yaml(path)["optim"]["lr"]) is float  # YAML 1.2 floats without a dot


def test_yaml_errors_are_one_line_with_the_file(tmp_path):
    path = write(tmp_path, "name: r\noptim:\n  lr: 1\n   bad: [\n")
    with pytest.raises(LakdError) as excinfo:
        load_yaml(path)
    assert message(excinfo).startswith(f"{path}: invalid YAML at line 4, column ")
    assert "\n" not in message(excinfo)

    path = write(tmp_path, "name: r\nepochs: 1\nepochs: 2\n")
    with pytest.raises(LakdError) as excinfo:
        load_yaml(path)
    assert message(excinfo) == f"{path}: invalid YAML at line 3, column 1: duplicate key 'epochs'"

    with pytest.raises(LakdError) as excinfo:
        load_yaml(write(tmp_path, "- a\n- b\n", "list.yaml"))
    assert (
        message(excinfo)
        == f"{tmp_path / 'list.yaml'}: expected a mapping of keys at the top level, got ['a', 'b']"
    )

    with pytest.raises(LakdError) as excinfo:
        load_yaml(write(tmp_path, "# nothing\n", "empty.yaml"))
    assert message(excinfo).endswith(
        "empty.yaml: expected a mapping of keys at the top level, got an empty file"
    )

    with pytest.raises(LakdError) as excinfo:
        load_yaml(tmp_path / "absent.yaml")
    assert message(excinfo) == f"{tmp_path / 'absent.yaml'}: no such file"

    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(LakdError) as excinfo:
        load_yaml(tmp_path / "latin1.yaml")
    assert message(excinfo) == f"{tmp_path / 'latin1.yaml'}: not UTF-8 text"

    with pytest.raises(LakdError) as excinfo:
        load_yaml(tmp_path)
    assert message(excinfo).startswith(f"{tmp_path}: cannot read (")


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "name: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(LakdError) as excinfo:
        load_yaml(path)
    assert message(excinfo).startswith(
        f"{path}: invalid YAML at line 1, column 7: could not determine a constructor"
    )


def test_load_config_from_file_mapping_or_defaults(tmp_path):
    path = write(tmp_path, "name: r\nteacher: {model: m}\noptim:\n  lr: 3e-4\nrecipe: fd\n")
    cfg = load_config(Run, path, overrides=["epochs=4", "teacher.kind=cached"])
    assert cfg == Run(name="r", teacher=Teacher(model="m", kind="cached"), optim=Optim(lr=3e-4), epochs=4)
    assert load_config(Run, mapping={"name": "r", "teacher": {"model": "m"}}) == Run("r", Teacher("m"))
    assert load_config(Optim, overrides=["lr=0.5"]) == Optim(lr=0.5)
    assert load_config(Optim) == Optim()
    with pytest.raises(TypeError):
        load_config(Optim, path, mapping={})


def test_load_config_errors_name_the_file(tmp_path):
    path = write(tmp_path, "name: r\nteacher: {model: m}\noptim:\n  lr: fast\n")
    with pytest.raises(LakdError) as excinfo:
        load_config(Run, path)
    assert message(excinfo) == f"{path}: optim.lr: expected a number, got 'fast'"
    with pytest.raises(LakdError) as excinfo:
        load_config(Run, str(path), overrides=["optim.lr=0.1", "optim.lr_sheduler=constant"])
    assert message(excinfo) == (
        "override 'optim.lr_sheduler=constant': unknown key 'optim.lr_sheduler' (did you mean 'optim.lr_scheduler'?)"
    )


# ------------------------------------------------------------------------------ writing back


def full_run() -> Run:
    return Run(
        name="1e-3",  # a string that reads as a number must stay a string
        teacher=Teacher(model="hf-hub:x/y", kind="cached", embeddings=Path("store/teacher")),
        optim=Optim(lr=3e-4, lr_scheduler="constant", betas=(0.8, 0.95)),
        recipe={"fd": 1.0, "kd": {"weight": 0.5, "temperature": 4}},
        weights={"kd": 1.0, "fd": 1e-6},
        epochs=3,
        tags=["yes", "null", "3"],
        eval=Optim(lr=1.0),
    )


def test_to_mapping_gives_plain_data():
    data = to_mapping(full_run())
    assert data["teacher"] == {"model": "hf-hub:x/y", "kind": "cached", "embeddings": "store/teacher"}
    assert data["optim"] == {"lr": 3e-4, "lr_scheduler": "constant", "betas": [0.8, 0.95]}
    assert to_mapping(Kinds(color=Color.GREEN, sizes=(1,)))["color"] == "green"
    assert yaml.safe_load(yaml.safe_dump(data)) == data  # plain YAML data all the way down
    with pytest.raises(TypeError):
        to_mapping(Run)


@pytest.mark.parametrize("obj", [full_run(), Run(name="r", teacher=Teacher("m")), Kinds(), PlainOptim()])
def test_dump_then_load_round_trips(tmp_path, obj):
    path = tmp_path / "sub" / "dumped.yaml"
    dump_yaml(obj, path)
    assert load_config(type(obj), path) == obj
    assert [p.name for p in path.parent.iterdir()] == ["dumped.yaml"]  # nothing temporary left
    assert "!!" not in path.read_text()  # no Python tags


def test_dump_writes_readable_yaml(tmp_path):
    dump_yaml(Optim(lr=0.5, betas=(0.8, 0.9)), tmp_path / "optim.yaml")
    assert (tmp_path / "optim.yaml").read_text() == "lr: 0.5\nlr_scheduler: cosine\nbetas:\n- 0.8\n- 0.9\n"
    dump_yaml(Kinds(text="1e5", table={"a": 1e-8}), tmp_path / "kinds.yaml")
    text = (tmp_path / "kinds.yaml").read_text()
    assert "text: '1e5'\n" in text and "a: 1.0e-08\n" in text
