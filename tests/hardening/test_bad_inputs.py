"""The bad-input corpus: every case exits 2 with exactly one `error:` line naming the file, tensor,
node or option at fault; no traceback; nothing written; the inputs byte-identical afterwards.

The CLI runs in-process (click's CliRunner) on hand-built tiny models, so the corpus is fast.
"""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper
from onnx import helper as h

import onnxcomp
from onnxcomp.cli import cli
from onnxcomp.errors import OnnxcompError

REPO = Path(__file__).resolve().parents[2]
DIM = 16


def tiny_model(weight: np.ndarray | None = None, opset: int = 21) -> onnx.ModelProto:
    """x[batch, 16] → MatMul W → Add b → Relu → y."""
    weight = np.random.default_rng(0).standard_normal((DIM, DIM)).astype(np.float32) if weight is None else weight
    graph = h.make_graph(
        [
            h.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            h.make_node("Add", ["h", "b"], ["a"], name="add"),
            h.make_node("Relu", ["a"], ["y"], name="relu"),
        ],
        "tiny",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weight.shape[0]])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weight.shape[1]])],
        [
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(np.zeros(weight.shape[1], np.float32), "b"),
        ],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=10)


def gather_model(vocab: int = 10) -> onnx.ModelProto:
    """ids[batch, seq] (int64) → Gather table[vocab, 16] → MatMul W → y."""
    rng = np.random.default_rng(1)
    graph = h.make_graph(
        [
            h.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
            h.make_node("MatMul", ["e", "W"], ["y"], name="mm"),
        ],
        "gather",
        [h.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", DIM])],
        [
            numpy_helper.from_array(rng.standard_normal((vocab, DIM)).astype(np.float32), "table"),
            numpy_helper.from_array(rng.standard_normal((DIM, DIM)).astype(np.float32), "W"),
        ],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)


def edited(change) -> bytes:
    model = tiny_model()
    change(model)
    return model.SerializeToString()


def feeds(n: int = 4, **overrides) -> list[dict]:
    rng = np.random.default_rng(2)
    return [{"x": rng.standard_normal((2, DIM)).astype(np.float32), **overrides} for _ in range(n)]


class Workspace:
    """An input folder (models, data, recipes, code) and an empty output folder."""

    def __init__(self, root: Path, monkeypatch):
        self.inp, self.out = root / "in", root / "out"
        self.inp.mkdir()
        self.out.mkdir()
        self.model = self.file("tiny.onnx", tiny_model().SerializeToString())
        self.calib = self.npz_dir("calib", feeds())
        monkeypatch.syspath_prepend(str(self.inp))
        self.monkeypatch = monkeypatch

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.inp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def npz_dir(self, name: str, samples: list[dict]) -> Path:
        folder = self.inp / name
        folder.mkdir()
        for i, sample in enumerate(samples):
            np.savez(folder / f"{i:03d}.npz", **sample)
        return folder

    def code(self, name: str, source: str) -> str:
        """A module in the input folder; returns its name (unique per test: no import cache)."""
        module = f"{name}_{abs(hash(str(self.inp))) % 10**8}"
        self.file(f"{module}.py", textwrap.dedent(source))
        return module

    def snapshot(self) -> dict[str, str]:
        return {
            str(p.relative_to(self.inp.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.inp.parent.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        }


def out(ws) -> str:
    return str(ws.out / "o.onnx")


def recipe(ws, text: str, suffix: str = ".toml") -> str:
    return str(ws.file(f"recipe{suffix}", textwrap.dedent(text)))


# (case id, argv builder, words the error line must contain)
CLI_CASES = [
    # -- the model file
    ("missing-model", lambda ws: ["compress", ws.inp / "nope.onnx", "-o", out(ws)], ["nope.onnx"]),
    ("empty-file", lambda ws: ["compress", ws.file("e.onnx", b""), "-o", out(ws)], ["e.onnx"]),
    (
        "truncated-protobuf",
        lambda ws: ["compress", ws.file("t.onnx", ws.model.read_bytes()[:200]), "-o", out(ws)],
        ["t.onnx"],
    ),
    (
        "random-bytes",
        lambda ws: ["compress", ws.file("r.onnx", np.random.default_rng(3).bytes(4096)), "-o", out(ws)],
        ["r.onnx"],
    ),
    ("directory-as-model", lambda ws: ["compress", ws.calib, "-o", out(ws)], ["calib"]),
    (
        "dangling-input",
        lambda ws: [
            "compress",
            ws.file("d.onnx", edited(lambda m: m.graph.node[1].input.__setitem__(1, "nowhere"))),
            "-o",
            out(ws),
            "--recipe",
            "w4a16-rtn",
        ],
        ["d.onnx", "checker"],
    ),
    (
        "duplicate-output-names",
        lambda ws: [
            "compress",
            ws.file("dup.onnx", edited(lambda m: m.graph.node[1].output.__setitem__(0, "h"))),
            "-o",
            out(ws),
            "--recipe",
            "w4a16-rtn",
        ],
        ["dup.onnx"],
    ),
    (
        "opset-from-the-future",
        lambda ws: [
            "compress",
            ws.file("f.onnx", edited(lambda m: m.opset_import[0].__setattr__("version", 999))),
            "-o",
            out(ws),
        ],
        ["f.onnx"],
    ),
    (
        "unknown-op",
        lambda ws: [
            "compress",
            ws.file("u.onnx", edited(lambda m: m.graph.node[2].__setattr__("op_type", "Frobnicate"))),
            "-o",
            out(ws),
        ],
        ["u.onnx", "Frobnicate"],
    ),
    (
        "custom-domain-op-without-opset-import",
        lambda ws: [
            "compress",
            ws.file("c.onnx", edited(lambda m: m.graph.node[2].__setattr__("domain", "com.example"))),
            "-o",
            out(ws),
        ],
        ["c.onnx"],
    ),
    (
        "zero-size-weight-w4a16",
        lambda ws: [
            "compress",
            ws.file("z.onnx", tiny_model(np.zeros((DIM, 0), np.float32)).SerializeToString()),
            "-o",
            out(ws),
            "--recipe",
            "w4a16-rtn",
        ],
        ["W"],
    ),
    (
        "nan-weight-int8",
        lambda ws: [
            "compress",
            ws.file("n.onnx", tiny_model(np.full((DIM, DIM), np.nan, np.float32)).SerializeToString()),
            "-o",
            out(ws),
            "--calib",
            ws.calib,
        ],
        ["W", "NaN"],
    ),
    (
        "inf-weight-w4a16",
        lambda ws: [
            "compress",
            ws.file("i.onnx", tiny_model(np.full((DIM, DIM), np.inf, np.float32)).SerializeToString()),
            "-o",
            out(ws),
            "--recipe",
            "w4a16-rtn",
        ],
        ["W", "Inf"],
    ),
    # -- calibration data
    ("calib-missing", lambda ws: ["compress", ws.model, "-o", out(ws), "--calib", ws.inp / "none"], ["none"]),
    ("calib-empty-folder", lambda ws: ["compress", ws.model, "-o", out(ws), "--calib", ws.npz_dir("e", [])], ["e"]),
    (
        "calib-wrong-name",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--calib", ws.npz_dir("w", [{"z": np.zeros((2, DIM))}])],
        ["'z'"],
    ),
    (
        "calib-wrong-dtype",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--calib",
            ws.npz_dir("w", feeds(1, x=np.zeros((2, DIM), bool))),
        ],
        ["'x'", "dtype"],
    ),
    (
        "calib-wrong-rank",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--calib",
            ws.npz_dir("w", feeds(1, x=np.zeros(DIM, np.float32))),
        ],
        ["'x'", "rank"],
    ),
    (
        "calib-wrong-width",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--calib",
            ws.npz_dir("w", feeds(1, x=np.zeros((2, 3), np.float32))),
        ],
        ["'x'", "shape"],
    ),
    (
        "calib-nan",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--calib",
            ws.npz_dir("w", feeds(1, x=np.full((2, DIM), np.nan, np.float32))),
        ],
        ["'x'", "NaN"],
    ),
    (
        "calib-zero-size",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--calib",
            ws.npz_dir("w", feeds(2, x=np.zeros((0, DIM), np.float32))),
        ],
        ["x"],
    ),
    (
        "calib-not-npz",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--calib", ws.file("junk/a.npz", b"not a zip")],
        ["a.npz"],
    ),
    (
        "calib-text-without-tokenizer",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--calib", ws.file("c.txt", "hello world\n")],
        ["c.txt", "tokenizer"],
    ),
    (
        "calib-function-missing",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--calib", ws.code("cm", "x = 1\n") + ":feeds"],
        ["feeds"],
    ),
    (
        "calib-function-raises",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--calib",
            ws.code("cr", "def feeds():\n    raise RuntimeError('no data today')\n") + ":feeds",
        ],
        ["feeds", "no data today"],
    ),
    (
        "calib-module-syntax-error",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--calib", ws.code("cs", "def feeds(:\n") + ":feeds"],
        ["feeds", "SyntaxError"],
    ),
    (
        "calib-generator-raises-midway",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--calib",
            ws.code(
                "cg",
                """
                import numpy as np
                def feeds():
                    yield {"x": np.zeros((2, 16), np.float32)}
                    raise OSError("disk gone")
                """,
            )
            + ":feeds",
        ],
        ["feeds", "disk gone", "sample 1"],
    ),
    (
        "calib-function-returns-a-number",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--calib",
            ws.code("cn", "def feeds():\n    return 3\n") + ":feeds",
        ],
        ["feeds", "iterable"],
    ),
    (
        "calib-token-id-out-of-vocabulary",
        lambda ws: [
            "compress",
            ws.file("g.onnx", gather_model().SerializeToString()),
            "-o",
            out(ws),
            "--calib",
            ws.npz_dir("ids", [{"ids": np.array([[1, 2, 500]], np.int64)}]),
        ],
        ["calibration batch 0"],
    ),
    # -- recipes and options
    ("unknown-preset", lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", "int7"], ["int7"]),
    (
        "recipe-file-missing",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", ws.inp / "r.toml"],
        ["r.toml"],
    ),
    (
        "recipe-bad-toml",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", recipe(ws, "base = [\n")],
        ["recipe.toml"],
    ),
    (
        "recipe-bad-yaml",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", recipe(ws, "base: [int8\n", ".yaml")],
        ["recipe.yaml"],
    ),
    (
        "recipe-misspelled-pass",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", recipe(ws, '[[passes]]\npass = "quantise_qdq"\n')],
        ["quantise_qdq"],
    ),
    (
        "recipe-misspelled-option",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--recipe",
            recipe(ws, 'base = "int8"\n[options.quantize_qdq]\nmethdo = "mse"\n'),
        ],
        ["methdo"],
    ),
    (
        "recipe-misspelled-key",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", recipe(ws, 'bsae = "int8"\n')],
        ["bsae"],
    ),
    (
        "recipe-unknown-base",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", recipe(ws, 'base = "int9"\n')],
        ["int9"],
    ),
    (
        "recipe-no-passes",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", recipe(ws, "passes = []\n")],
        ["no passes"],
    ),
    (
        "recipe-percentile-string",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--calib",
            ws.calib,
            "--recipe",
            recipe(ws, 'base = "int8"\n[options.quantize_qdq]\npercentile = "high"\n'),
        ],
        ["quantize_qdq", "high"],
    ),
    (
        "recipe-min-elements-string",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--recipe",
            recipe(ws, 'base = "w4a16-rtn"\n[options.quantize_embedding]\nmin_elements = "big"\n'),
        ],
        ["min_elements", "big"],
    ),
    (
        "recipe-exclude-string-not-list",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--calib",
            ws.calib,
            "--recipe",
            recipe(ws, 'base = "int8"\n[options.quantize_qdq]\nexclude = "Softmax"\n'),
        ],
        ["exclude", "list"],
    ),
    (
        "recipe-group-size-out-of-range",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--recipe",
            recipe(ws, 'base = "w4a16-rtn"\n[options.quantize_weight_only]\ngroup_size = 7\n'),
        ],
        ["group_size"],
    ),
    (
        "alpha-out-of-range",
        lambda ws: [
            "compress",
            ws.model,
            "-o",
            out(ws),
            "--calib",
            ws.calib,
            "--recipe",
            "w8a8-smoothquant",
            "--alpha",
            "2",
        ],
        ["alpha"],
    ),
    (
        "alpha-not-a-number",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", "w8a8-smoothquant", "--alpha", "lots"],
        ["alpha"],
    ),
    (
        "group-size-not-a-choice",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", "w4a16-rtn", "--group-size", "7"],
        ["group-size"],
    ),
    ("group-size-on-int8", lambda ws: ["compress", ws.model, "-o", out(ws), "--group-size", "64"], ["group-size"]),
    (
        "calib-method-unknown",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--calib-method", "vibes"],
        ["calib-method"],
    ),
    ("opset-below-minimum", lambda ws: ["compress", ws.model, "-o", out(ws), "--opset", "5"], ["opset"]),
    (
        "opset-below-the-model",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--opset", "19", "--recipe", "w4a16-rtn"],
        ["opset 19", "opset 21"],
    ),
    ("unknown-model-kind", lambda ws: ["compress", ws.model, "-o", out(ws), "--model-kind", "gpt9"], ["gpt9"]),
    (
        "verify-without-data",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", "w4a16-rtn", "--verify"],
        ["verify"],
    ),
    ("int8-without-data", lambda ws: ["compress", ws.model, "-o", out(ws)], ["calib"]),
    # -- outputs
    ("output-folder-missing", lambda ws: ["compress", ws.model, "-o", ws.out / "no" / "o.onnx"], ["o.onnx"]),
    (
        "output-is-the-input",
        lambda ws: ["compress", ws.model, "-o", ws.model, "--recipe", "w4a16-rtn"],
        ["same as the input"],
    ),
    (
        "report-folder-missing",
        lambda ws: ["compress", ws.model, "-o", out(ws), "--recipe", "w4a16-rtn", "--report", ws.out / "no" / "r.json"],
        ["r.json"],
    ),
    # -- eval
    ("eval-runs-zero", lambda ws: ["eval", ws.model, ws.model, "--runs", "0"], ["--runs"]),
    ("eval-batch-zero", lambda ws: ["eval", ws.model, ws.model, "--batch", "0"], ["--batch"]),
    ("eval-batch-negative", lambda ws: ["eval", ws.model, ws.model, "--batch", "-1"], ["--batch"]),
    ("eval-sequence-huge", lambda ws: ["eval", ws.model, ws.model, "--sequence", "100000"], ["--sequence"]),
    (
        "eval-model-kind-mismatch",
        lambda ws: ["eval", ws.model, ws.model, "--model-kind", "minilm", "--runs", "1"],
        ["minilm"],
    ),
    (
        "eval-different-models",
        lambda ws: ["eval", ws.model, ws.file("g.onnx", gather_model().SerializeToString()), "--runs", "1"],
        ["g.onnx"],
    ),
    ("eval-missing-file", lambda ws: ["eval", ws.model, ws.inp / "gone.onnx"], ["gone.onnx"]),
    # -- export and inspect
    ("export-opset-7", lambda ws: ["export", ws.model, "-o", out(ws), "--opset", "7"], ["opset"]),
    ("export-opset-down", lambda ws: ["export", ws.model, "-o", out(ws), "--opset", "19"], ["opset 19"]),
    (
        "export-function-raises",
        lambda ws: [
            "export",
            ws.code("ex", "def build():\n    raise ValueError('weights missing')\n") + ":build",
            "-o",
            out(ws),
        ],
        ["build", "weights missing"],
    ),
    (
        "export-function-returns-junk",
        lambda ws: ["export", ws.code("ej", "def build():\n    return 42\n") + ":build", "-o", out(ws)],
        ["build"],
    ),
    ("export-unknown-source", lambda ws: ["export", "nothing-like-this", "-o", out(ws)], ["nothing-like-this"]),
    ("inspect-garbage", lambda ws: ["inspect", ws.file("g.onnx", b"\x08\x07garbage")], ["g.onnx"]),
    ("demo-unknown-recipe", lambda ws: ["demo", "--recipe", "int7", "--out-dir", ws.out], ["int7"]),
]


@pytest.mark.parametrize("build", [c[1] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(build, tmp_path, monkeypatch, request):
    case = next(c for c in CLI_CASES if c[1] is build)
    ws = Workspace(tmp_path, monkeypatch)
    argv = [str(a) for a in build(ws)]
    before = ws.snapshot()
    result = CliRunner().invoke(cli, argv)
    text = result.output + (
        result.stderr if result.stderr_bytes is not None and result.stderr not in result.output else ""
    )
    assert "Traceback" not in text, text
    assert result.exit_code == 2, f"exit {result.exit_code}: {text}\n{result.exception!r}"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    for needle in case[2]:
        assert needle in lines[0], lines[0]
    assert ws.snapshot() == before, "inputs changed or files were left behind"


# -- the Python API ----------------------------------------------------------------------------
API_CASES = [
    ("model-as-bytes", lambda ws: dict(model=ws.model.read_bytes(), recipe="w4a16-rtn"), "bytes"),
    ("model-as-number", lambda ws: dict(model=3, recipe="w4a16-rtn"), "model"),
    ("recipe-none", lambda ws: dict(model=ws.model, recipe=None), "recipe"),
    ("recipe-list-of-names", lambda ws: dict(model=ws.model, recipe=["fold_constants"]), "recipe[0]"),
    ("recipe-options-not-a-dict", lambda ws: dict(model=ws.model, recipe=[("fold_constants", 3)]), "recipe[0]"),
    ("recipe-empty-list", lambda ws: dict(model=ws.model, recipe=[]), "no passes"),
    ("calibration-single-dict", lambda ws: dict(model=ws.model, calibration=feeds(1)[0]), "one dict"),
    ("calibration-iterator", lambda ws: dict(model=ws.model, calibration=iter(feeds())), "iterator"),
    ("calibration-generator", lambda ws: dict(model=ws.model, calibration=(f for f in feeds())), "iterator"),
    ("calibration-number", lambda ws: dict(model=ws.model, calibration=7), "calibration"),
    ("calibration-list-of-junk", lambda ws: dict(model=ws.model, calibration=[1, 2]), "dict"),
    ("options-not-a-dict", lambda ws: dict(model=ws.model, calibration=feeds(), options=["mse"]), "options"),
    (
        "options-value-not-a-dict",
        lambda ws: dict(model=ws.model, calibration=feeds(), options={"quantize_qdq": "mse"}),
        "options",
    ),
    (
        "options-for-absent-pass",
        lambda ws: dict(model=ws.model, recipe="w4a16-rtn", options={"quantize_qdq": {}}),
        "quantize_qdq",
    ),
    (
        "options-bool-as-string",
        lambda ws: dict(model=ws.model, recipe="w4a16-rtn", options={"quantize_weight_only": {"symmetric": "no"}}),
        "symmetric",
    ),
    (
        "precision-plan-junk",
        lambda ws: dict(model=ws.model, recipe="w4a16-rtn", precision_plan={"a": 4}),
        "precision_plan",
    ),
    ("opset-below-the-model", lambda ws: dict(model=ws.model, recipe="w4a16-rtn", opset=19), "opset"),
    ("output-is-the-input", lambda ws: dict(model=ws.model, recipe="w4a16-rtn", output=ws.model), "same as the input"),
    (
        "text-not-utf8",
        lambda ws: dict(
            model=ws.model,
            calibration=ws.file("latin1.txt", "caf\xe9\n".encode("latin-1")),
            tokenizer=lambda *a, **k: {},
        ),
        "UTF-8",
    ),
]


@pytest.mark.parametrize("build", [c[1] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input(build, tmp_path, monkeypatch):
    case = next(c for c in API_CASES if c[1] is build)
    ws = Workspace(tmp_path, monkeypatch)
    kwargs = build(ws)
    kwargs.setdefault("output", ws.out / "o.onnx")
    before = ws.snapshot()
    with pytest.raises(OnnxcompError) as info:
        onnxcomp.compress(kwargs.pop("model"), kwargs.pop("recipe", "int8"), kwargs.pop("calibration", None), **kwargs)
    message = str(info.value)
    assert "\n" not in message and case[2] in message, message
    assert ws.snapshot() == before


def test_truncated_calibration_cache_names_the_file_and_no_cache(tmp_path, monkeypatch, tmp_cache):
    ws = Workspace(tmp_path, monkeypatch)
    args = ["compress", str(ws.model), "-o", str(ws.out / "o.onnx"), "--calib", str(ws.calib)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    (cached,) = (tmp_cache / "calibration").glob("*.npz")
    cached.write_bytes(cached.read_bytes()[:100])
    (ws.out / "o.onnx").unlink()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    assert cached.name in result.output and "--no-cache" in result.output
    assert not (ws.out / "o.onnx").exists()
    assert CliRunner().invoke(cli, [*args, "--no-cache"]).exit_code == 0


SIGNALLING_FEEDS = """
import os, signal, time
import numpy as np

def feeds():
    for i in range(1000):
        if i == 2:
            os.kill(os.getpid(), signal.{signal})
            time.sleep(5)  # the handler runs here
        yield {{"x": np.ones((2, 16), np.float32)}}
"""


@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 128 + signal.SIGTERM)])
def test_signal_during_compress_exits_cleanly(name, code, tmp_path, monkeypatch, tmp_cache):
    ws = Workspace(tmp_path, monkeypatch)
    module = ws.code(f"sig_{name.lower()}", SIGNALLING_FEEDS.format(signal=name))
    before = ws.snapshot()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ws.inp), str(REPO)])}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            # a background job's children inherit SIGINT ignored: restore the default, as a terminal has it
            "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from onnxcomp.cli import main; main()",
            "compress",
            str(ws.model),
            "-o",
            str(ws.out / "o.onnx"),
            "--calib",
            f"{module}:feeds",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error: "), proc.stderr
    assert ws.snapshot() == before


def compress_process(ws, output: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ws.inp), str(REPO)])}
    argv = ["compress", str(ws.model), "-o", str(output), "--recipe", "w4a16-rtn"]
    code = "from onnxcomp.cli import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen
    )


def test_output_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import resource

    ws = Workspace(tmp_path, monkeypatch)
    ws.model.write_bytes(tiny_model(np.ones((512, 512), np.float32)).SerializeToString())
    limit = 16 * 1024  # the int4 output is ~140 kB: the write fails part-way (EFBIG, as on a full disk)
    before = ws.snapshot()
    proc = compress_process(
        ws, ws.out / "o.onnx", preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.strip().count("\n") == 0 and err.startswith("error: ") and "o.onnx" in err, err
    assert ws.snapshot() == before


def test_two_processes_writing_the_same_output(tmp_path, monkeypatch):
    ws = Workspace(tmp_path, monkeypatch)
    procs = [compress_process(ws, ws.out / "o.onnx") for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert [p.name for p in ws.out.iterdir()] == ["o.onnx"], "temporary files left behind"
    onnx.checker.check_model(onnx.load(str(ws.out / "o.onnx")), full_check=True)


@pytest.mark.parametrize("case", ["dangling", "token-out-of-vocabulary"])
def test_real_process_stderr_is_exactly_one_line(case, tmp_path, monkeypatch):
    """In a real process, library loggers (onnx_ir) and ONNX Runtime's own log add no lines."""
    ws = Workspace(tmp_path, monkeypatch)
    if case == "dangling":
        model = tiny_model()
        model.graph.node[0].input[0] = "dangling"
        ws.model.write_bytes(model.SerializeToString())
        extra = ["--recipe", "w4a16-rtn"]
    else:
        ws.model.write_bytes(gather_model().SerializeToString())
        extra = ["--calib", str(ws.npz_dir("ids", [{"ids": np.array([[1, 2, 500]], np.int64)}]))]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "from onnxcomp.cli import main; main()"
    argv = ["compress", str(ws.model), "-o", str(ws.out / "o.onnx"), *extra]
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
