"""The custom-op build cache under two processes, and `--force` over an existing build.

The compiler is replaced by a fake step (each child process patches `build._run` to write its tag
into every `-o` file after a short sleep), so the race is real but takes a second, not minutes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from onnxcomp.custom_ops import build

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import json, sys, time
from pathlib import Path
from onnxcomp.custom_ops import build

tag, force, rounds, start = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), float(sys.argv[4])

barrier = Path(sys.argv[5]) if len(sys.argv) > 5 else None

def fake_run(cmd, cwd, log):
    if barrier is not None:  # both processes are past the cache check, building, before either finishes
        (barrier / tag).touch()
        deadline = time.time() + 30
        while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.01)
    time.sleep(0.05)
    Path(cmd[cmd.index("-o") + 1]).write_text(tag)
    return ""

build._run = fake_run
build.find_nvcc = lambda: None
while time.time() < start:
    time.sleep(0.001)
seen = []
for _ in range(rounds):
    info = build.build_library(cuda=False, force=force)
    seen.append({"cached": info["cached"], "lib": Path(info["path"]).read_text(), "path": info["path"]})
print(json.dumps(seen))
"""


def run_pair(cache: Path, force: bool, rounds: int = 1, barrier: Path | None = None) -> list[list[dict]]:
    env = {**os.environ, "ONNXCOMP_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    start = time.time() + 3  # both children past their imports
    extra = [str(barrier)] if barrier else []
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, tag, "1" if force else "0", str(rounds), str(start), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("A", "B")
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    return results


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "custom_ops").iterdir() if ".tmp" in p.name or ".old" in p.name)


def test_two_processes_building_at_once_share_one_complete_build(tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    (a,), (b,) = run_pair(tmp_path / "cache", force=False, barrier=barrier)
    assert not a["cached"] and not b["cached"]  # both really built at the same time
    assert a["path"] == b["path"] and a["lib"] == b["lib"] in ("A", "B")  # the loser uses the winner's
    folder = Path(a["path"]).parent
    assert json.loads((folder / "build.json").read_text())["cuda"] is False
    assert leftovers(tmp_path / "cache") == []


def test_force_replaces_an_existing_build(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXCOMP_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    for tag in ("old", "new"):
        monkeypatch.setattr(
            build, "_run", lambda cmd, cwd, log, tag=tag: Path(cmd[cmd.index("-o") + 1]).write_text(tag)
        )
        info = build.build_library(cuda=False, force=True)
        assert Path(info["path"]).read_text() == tag and not info["cached"]
    assert build.build_library(cuda=False)["cached"]
    assert leftovers(tmp_path) == []


def test_two_processes_forcing_builds_leave_one_complete_build(tmp_path):
    a, b = run_pair(tmp_path, force=True, rounds=5)
    assert all(not r["cached"] and r["lib"] in ("A", "B") for r in a + b)
    lib = Path(a[-1]["path"])
    assert lib.read_text() in ("A", "B") and (lib.parent / "build.json").exists()
    assert leftovers(tmp_path) == []
