"""onnxcomp.passes.recipes: presets, TOML/YAML files, overrides, and their errors."""

import textwrap

import numpy as np
import pytest
from onnx import TensorProto

import onnxcomp
from onnxcomp.errors import OnnxcompError
from onnxcomp.passes.recipes import PRESETS, apply_overrides, load_recipe, preset_names


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def tiny_mm(tiny):
    h = tiny.helper
    return tiny.make_model(
        [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [("x", ["n", 4])],
        [("y", ["n", 3])],
        {"w": np.ones((4, 3), np.float32)},
    )


# -- presets -----------------------------------------------------------------------------------------
def test_presets():
    assert preset_names() == sorted(PRESETS) and {"canonicalize", "int8"} <= set(preset_names())
    canon = [name for name, _ in load_recipe("canonicalize")]
    assert canon == ["fold_constants", "simplify", "fold_batchnorm", "remove_unused"]
    int8 = [name for name, _ in load_recipe("int8")]
    assert int8[: len(canon)] == canon
    assert int8.index("calibrate") < int8.index("quantize_qdq")


def test_loaded_preset_is_a_copy():
    steps = load_recipe("int8")
    dict(steps)["quantize_qdq"]["method"] = "entropy"
    assert "method" not in dict(load_recipe("int8"))["quantize_qdq"]


def test_every_preset_pass_exists_and_accepts_its_options():
    from onnxcomp.passes import PASSES

    for preset in preset_names():
        for name, opts in load_recipe(preset):
            PASSES[name](**opts)


# -- files: explicit pass list ---------------------------------------------------------------------
EXPLICIT_TOML = """
name = "mine"
description = "explicit passes"
[[passes]]
pass = "fold_constants"
[[passes]]
pass = "calibrate"
[[passes]]
pass = "quantize_qdq"
method = "entropy"
exclude = ["*head*"]
"""

EXPLICIT_YAML = """
name: mine
passes:
  - pass: fold_constants
  - pass: calibrate
  - pass: quantize_qdq
    method: entropy
    exclude: ["*head*"]
"""

EXPECTED_EXPLICIT = [
    ("fold_constants", {}),
    ("calibrate", {}),
    ("quantize_qdq", {"method": "entropy", "exclude": ["*head*"]}),
]


@pytest.mark.parametrize("name, text", [("r.toml", EXPLICIT_TOML), ("r.yaml", EXPLICIT_YAML), ("r.yml", EXPLICIT_YAML)])
def test_file_with_explicit_passes(tmp_path, name, text):
    path = write(tmp_path, name, text)
    assert load_recipe(path) == EXPECTED_EXPLICIT
    assert load_recipe(str(path)) == EXPECTED_EXPLICIT


# -- files: base preset + options ------------------------------------------------------------------
BASE_TOML = """
base = "int8"
[options.quantize_qdq]
activation_dtype = "int8"
percentile = 99.9
[options.remove_unused]
"""

BASE_YAML = """
base: int8
options:
  quantize_qdq:
    activation_dtype: int8
    percentile: 99.9
  remove_unused: {}
"""


@pytest.mark.parametrize("name, text", [("b.toml", BASE_TOML), ("b.yaml", BASE_YAML)])
def test_file_with_base_and_options(tmp_path, name, text):
    steps = load_recipe(write(tmp_path, name, text))
    assert [n for n, _ in steps] == [n for n, _ in PRESETS["int8"]]
    assert dict(steps)["quantize_qdq"] == {"activation_dtype": "int8", "percentile": 99.9}
    assert dict(PRESETS["int8"])["quantize_qdq"] == {}  # the preset itself is untouched


def test_overrides_apply_to_every_step_of_a_pass():
    steps = apply_overrides(
        [("remove_unused", {}), ("simplify", {}), ("remove_unused", {})], {"remove_unused": {"a": 1}}
    )
    assert steps == [("remove_unused", {"a": 1}), ("simplify", {}), ("remove_unused", {"a": 1})]


def test_recipe_file_options_reach_the_pass(tmp_path, tiny_mm):
    path = write(
        tmp_path,
        "r.toml",
        """
        [[passes]]
        pass = "calibrate"
        [[passes]]
        pass = "quantize_qdq"
        activation_dtype = "int8"
        """,
    )
    feeds = [{"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)}]
    result = onnxcomp.compress(tiny_mm, path, calibration=feeds, use_cache=False)
    assert result.report["recipe"][1] == {"pass": "quantize_qdq", "activation_dtype": "int8"}
    zero_points = [i for i in result.model.graph.initializer if i.name == "x_zero_point"]
    assert len(zero_points) == 1 and zero_points[0].data_type == TensorProto.INT8


# -- errors ----------------------------------------------------------------------------------------------
def test_unknown_pass_in_list_and_file(tmp_path):
    with pytest.raises(OnnxcompError, match=r"unknown pass 'fold_everything' \(known: .*fold_constants"):
        load_recipe([("fold_constants", {}), ("fold_everything", {})])
    path = write(tmp_path, "r.yaml", "passes:\n  - pass: quantise_qdq\n")
    with pytest.raises(OnnxcompError, match="unknown pass 'quantise_qdq'"):
        load_recipe(path)


def test_unknown_option_raises_when_passes_are_built(tiny_mm):
    with pytest.raises(OnnxcompError, match=r"pass 'quantize_qdq': unknown option 'methd' \(known: .*method"):
        onnxcomp.compress(tiny_mm, "int8", options={"quantize_qdq": {"methd": "mse"}})
    with pytest.raises(OnnxcompError, match=r"pass 'simplify': unknown option 'aggressive' \(known: none\)"):
        onnxcomp.compress(tiny_mm, [("simplify", {"aggressive": True})])


def test_unknown_option_in_recipe_file(tmp_path, tiny_mm):
    path = write(tmp_path, "r.toml", 'base = "canonicalize"\n[options.fold_constants]\nsize_limit = 3\n')
    with pytest.raises(OnnxcompError, match="pass 'fold_constants': unknown option 'size_limit'"):
        onnxcomp.compress(tiny_mm, path)


def test_options_for_a_pass_the_recipe_does_not_run(tiny_mm, tmp_path):
    with pytest.raises(OnnxcompError, match="options given for pass 'quantize_qdq', which the recipe does not run"):
        onnxcomp.compress(tiny_mm, "canonicalize", options={"quantize_qdq": {"method": "mse"}})
    path = write(tmp_path, "r.toml", 'base = "canonicalize"\n[options.calibrate]\n')
    with pytest.raises(OnnxcompError, match=r"r\.toml: options given for pass 'calibrate'"):
        load_recipe(path)


@pytest.mark.parametrize(
    "options, pattern",
    [
        ({"method": "kl"}, "unknown calibration method 'kl'"),
        ({"activation_dtype": "int4"}, "activation_dtype must be uint8 or int8"),
        ({"percentile": 0}, r"percentile must be in \(0, 100\]"),
        ({"percentile": 100.5}, r"percentile must be in \(0, 100\]"),
        ({"op_types": ["Conv", "Softmax"]}, "op_types 'Softmax' not supported"),
    ],
)
def test_bad_option_values(tiny_mm, options, pattern):
    with pytest.raises(OnnxcompError, match=pattern):
        onnxcomp.compress(tiny_mm, "int8", options={"quantize_qdq": options})


@pytest.mark.parametrize("recipe", ["int9", "fast", "recipe.json", "recipe.txt"])
def test_unknown_recipe_name(recipe):
    with pytest.raises(OnnxcompError, match=rf"unknown recipe '{recipe}' \(presets: canonicalize, int8"):
        load_recipe(recipe)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(OnnxcompError, match=r"nope\.toml: recipe file not found"):
        load_recipe(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "name, text",
    [
        ("bad.toml", "[[passes]\npass = 'fold_constants'\n"),
        ("bad.toml", 'base = "int8\n'),
        ("bad.yaml", "passes:\n  - pass: [fold_constants\n"),
        ("bad.yaml", "base: int8\n  options: {\n"),
    ],
)
def test_unparsable_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(OnnxcompError, match=rf"{name.replace('.', '[.]')}: cannot parse recipe \(") as info:
        load_recipe(path)
    assert "\n" not in str(info.value)


def test_undecodable_file(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00base")
    with pytest.raises(OnnxcompError, match="cannot parse recipe"):
        load_recipe(path)


@pytest.mark.parametrize(
    "name, text, pattern",
    [
        ("r.yaml", "- pass: simplify\n", "a recipe must be a table"),
        ("r.yaml", "", "a recipe must be a table"),
        ("r.toml", 'name = "x"\n', "a recipe needs 'passes' or 'base'"),
        ("r.toml", 'base = "int8"\nbasis = 1\n', "unknown recipe key 'basis'"),
        ("r.toml", 'base = "int16"\n', "unknown base preset 'int16'"),
        ("r.toml", "[[passes]]\nmethod = 'mse'\n", r"passes\[0\] needs a 'pass' name"),
    ],
)
def test_malformed_recipe(tmp_path, name, text, pattern):
    with pytest.raises(OnnxcompError, match=pattern):
        load_recipe(write(tmp_path, name, text))


@pytest.mark.parametrize(
    "name, text",
    [
        ("r.toml", 'base = "int8"\noptions = "x"\n'),
        ("r.toml", 'base = "int8"\n[options]\nquantize_qdq = 5\n'),
        ("r.yaml", "base: [int8]\n"),
        ("r.toml", "passes = 3\n"),
    ],
    ids=["options_string", "option_table_int", "base_list", "passes_int"],
)
def test_wrongly_typed_recipe_values_give_a_clear_error(tmp_path, name, text):
    with pytest.raises(OnnxcompError, match=r"r\.(toml|yaml)"):
        load_recipe(write(tmp_path, name, text))
