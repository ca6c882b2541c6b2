"""Progress: a tqdm bar on an interactive terminal; off a terminal (CI logs, pipes) one plain line
on stderr every `interval()` seconds, so a long run is never silent. Nothing under --json."""

import os
import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

DEFAULT_INTERVAL = 30.0  # seconds between lines off a terminal; $ONNXCOMP_PROGRESS_SECONDS overrides

_enabled = True


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def interval() -> float:
    try:
        return max(0.0, float(os.environ.get("ONNXCOMP_PROGRESS_SECONDS", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def progress(iterable, desc: str = "working", unit: str = "it", **kwargs):
    """Wrap `iterable`: a tqdm bar on a TTY, periodic lines off one, nothing when disabled."""
    if not _enabled:
        return iterable
    if sys.stderr.isatty():
        return tqdm(iterable, file=sys.stderr, leave=False, desc=desc, unit=unit, **kwargs)
    return _periodic(iterable, desc, unit, kwargs.get("total"))


def _periodic(iterable: Iterable, desc: str, unit: str, total: int | None) -> Iterator:
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    start = last = time.monotonic()
    every = interval()
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every:
            last = now
            of = f"/{total}" if total is not None else ""
            print(f"onnxcomp: {desc} {done}{of} {unit} ({now - start:.0f} s)", file=sys.stderr, flush=True)
