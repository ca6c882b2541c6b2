"""Where built models, exported ONNX files and calibration statistics are cached."""

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from onnxcomp.errors import OnnxcompError

T = TypeVar("T")


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


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a cache file through a temporary file of this process beside it, then rename: a
    concurrent reader sees the old file or the whole new one, and two writers never share a
    temporary file (the last rename wins; both wrote the same content for the same key)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cached(path: Path, read: Callable[[Path], T]) -> T:
    """`read(path)`, or one error line naming the cache file and how to get past it."""
    try:
        return read(path)
    except Exception as exc:
        raise OnnxcompError(
            f"{path}: unreadable cache file ({type(exc).__name__}); delete it, or run with --no-cache "
            "(use_cache=False in the Python API)"
        ) from None
