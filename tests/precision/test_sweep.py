"""The sensitivity sweep gives the same errors, and so the same plan, in this process, on a local
process pool and on a local Ray cluster; an unreachable cluster is one line within seconds."""

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import onnxcomp
from onnxcomp.cli import cli
from onnxcomp.errors import OnnxcompError
from onnxcomp.precision.sweep import check_ray_address


def plan(digits, digits_path, **options):
    result = onnxcomp.compress(
        str(digits_path), "w4a16-mixed", digits.calibration_feeds(), options={"plan_precision": options},
        use_cache=False, speed_guard=False,
    )  # fmt: skip
    details = next(e["details"] for e in result.report["passes"] if e["pass"] == "plan_precision")
    return [(u["unit"], u["measured_error"], u["choice"]) for u in details["units"]], result.model.SerializeToString()


@pytest.fixture(scope="module")
def in_process(digits, digits_path):
    return plan(digits, digits_path)


def test_process_pool_gives_the_in_process_plan(digits, digits_path, in_process):
    units, model = plan(digits, digits_path, workers=2)
    assert units == in_process[0] and len(units) >= 2
    assert model == in_process[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_cluster_gives_the_in_process_plan(digits, digits_path, in_process):
    pytest.importorskip("ray")
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent))
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    start = [
        ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
        "--object-store-memory=100000000", "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats",
    ]  # fmt: skip
    subprocess.run(start, check=True, capture_output=True, timeout=180)
    try:
        units, model = plan(digits, digits_path, ray=f"127.0.0.1:{port}", workers=2)
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    assert units == in_process[0]
    assert model == in_process[1]


def test_unreachable_ray_address_is_one_line_within_seconds(digits, digits_path, tmp_path):
    port = free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(OnnxcompError, match=rf"--ray 127.0.0.1:{port}: no Ray head answers there"):
        plan(digits, digits_path, ray=f"127.0.0.1:{port}")
    assert time.monotonic() - start < 30  # refused before calibration or any measurement
    with pytest.raises(OnnxcompError, match="expected HOST:PORT"):
        check_ray_address("localhost")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipe", "int8", "--workers", "2"], "apply to mixed-precision recipes"),
        (["--recipe", "int8", "--ray", "127.0.0.1:1"], "apply to mixed-precision recipes"),
        (["--recipe", "w4a16-mixed", "--ray", "nohost"], "expected HOST:PORT"),
        (["--recipe", "w4a16-mixed", "--workers", "0"], "Invalid value for '--workers'"),
    ],
)
def test_bad_sweep_options_are_one_line(digits_path, tmp_path, args, message):
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(
        cli, [str(a) for a in ("compress", digits_path, "-o", out, "--model-kind", "digits", *args)]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()
