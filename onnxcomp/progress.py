"""Progress bars: shown only on an interactive terminal, never in --json output."""

import sys

from tqdm import tqdm

_enabled = True


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def progress(iterable, **kwargs):
    """Wrap `iterable` in a tqdm bar on stderr when it is a TTY and bars are enabled."""
    return tqdm(iterable, disable=not (_enabled and sys.stderr.isatty()), file=sys.stderr, leave=False, **kwargs)
