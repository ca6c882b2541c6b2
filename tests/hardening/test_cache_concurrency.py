"""The calibration cache under concurrent processes: each writer has its own temporary file and
renames it into place, so readers never see a partial file and writers never collide."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WRITER = """
import sys
import numpy as np
from pathlib import Path
from onnxcomp.calibration.collectors import TensorStats
from onnxcomp.calibration.runner import _load, _save

path = Path(sys.argv[1])
stats = TensorStats(64)
stats.update(np.arange(1000, dtype=np.float32) - 500)
for _ in range(150):
    _save(path, {"t": stats})
    loaded = _load(path, ["t"])["t"]
    assert loaded.count == 1000 and loaded.max == 499.0, loaded.max
print("ok")
"""


def test_two_processes_writing_the_same_cache_entry(tmp_path):
    path = tmp_path / "entry.npz"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.npz"], "temporary files left behind"
