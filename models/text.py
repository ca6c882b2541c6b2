"""English text shipped with Python (pydoc_data.topics), split into disjoint sentence sets, and a
second, differently sourced text for domain-shift evaluation.

Topics are taken in sorted key order; even-indexed topics give calibration text, odd-indexed
topics give evaluation text, so no sentence is in both. `shifted_text` is Python source code from
the standard library (code and its comments, not the reference manual's prose): a model calibrated
on the topics is evaluated there on text it was not calibrated on.
"""

import importlib.util
import re
from pathlib import Path
from pydoc_data.topics import topics

SHIFTED_MODULES = ("textwrap", "fractions", "heapq", "shlex", "statistics", "calendar", "csv", "json.decoder", "bisect")

_WORDS = re.compile(r"[A-Za-z]")


def _sentences(keys: list[str]) -> list[str]:
    out = []
    for key in keys:
        text = " ".join(topics[key].split())
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            words = sentence.split()
            if 6 <= len(words) <= 60 and len(_WORDS.findall(sentence)) > 20:
                out.append(sentence)
    return out


def calibration_sentences(n: int) -> list[str]:
    return _sentences(sorted(topics)[0::2])[:n]


DEV_OFFSET = 512  # dev sentences start here in the calibration topics: past any calibration count used


def dev_sentences(n: int) -> list[str]:
    """Sentences for tuning choices (the calibration topics, past the first DEV_OFFSET): disjoint from
    the calibration sentences a compress run reads (n ≤ DEV_OFFSET) and from the evaluation ones."""
    return _sentences(sorted(topics)[0::2])[DEV_OFFSET : DEV_OFFSET + n]


def evaluation_sentences(n: int) -> list[str]:
    return _sentences(sorted(topics)[1::2])[:n]


def calibration_text() -> str:
    """The calibration topics' text joined (for token windows of causal LMs)."""
    return "\n\n".join(topics[k] for k in sorted(topics)[0::2])


def evaluation_text() -> str:
    return "\n\n".join(topics[k] for k in sorted(topics)[1::2])


def shifted_text() -> str:
    """Source of `SHIFTED_MODULES` (pure-Python standard-library modules), joined."""
    return "\n\n".join(Path(importlib.util.find_spec(name).origin).read_text() for name in SHIFTED_MODULES)
