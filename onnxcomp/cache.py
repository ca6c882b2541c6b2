"""Where built models, exported ONNX files and calibration statistics are cached."""

import hashlib
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$ONNXCOMP_CACHE` (default `~/.cache/onnxcomp`), joined with `parts`, created."""
    root = Path(os.environ.get("ONNXCOMP_CACHE", Path.home() / ".cache" / "onnxcomp"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(*chunks: bytes | str) -> str:
    """A short stable hex digest of the given chunks, for cache keys."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk.encode() if isinstance(chunk, str) else chunk)
        h.update(b"\0")
    return h.hexdigest()[:24]
