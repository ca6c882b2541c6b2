"""A small CNN trained deterministically on scikit-learn's bundled 8×8 digits.

Conv-BN-ReLU ×2, MaxPool, Linear-ReLU-Linear; exercises BatchNorm folding, Conv and Gemm
quantization. Metric: accuracy on a held-out split (30 %, stratified, fixed seed).
"""

from functools import lru_cache

import numpy as np

from onnxcomp.cache import cache_dir
from onnxcomp.extras import require

SEED = 0
EXPORT_VERSION = 3  # 3: trained deterministically (seed before the net is built); caches of 2 were not
INPUT = "image"
OUTPUTS = ("logits",)


@lru_cache(maxsize=1)
def dataset():
    datasets = require("sklearn.datasets", "zoo", "the digits data set")
    train_test_split = require("sklearn.model_selection", "zoo", "the digits data set").train_test_split

    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)


def build_net():
    nn = require("torch.nn", "zoo", "the digits CNN")

    class DigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.BatchNorm2d(16),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * 4 * 4, 64),
                nn.ReLU(),
                nn.Linear(64, 10),
            )

        def forward(self, image):
            return self.layers(image)

    return DigitsCNN()


def trained_net():
    """Train (or load from the cache) the CNN; same seed → same weights."""
    return cached_net(cache_dir("models") / f"digits_cnn_v{EXPORT_VERSION}.pt", build_net)


def cached_net(path, build):
    """The network `build` makes, with weights from `path`, or trained by `train` and saved there."""
    torch = require("torch", "zoo", "the digits CNN")
    if path.exists():
        net = build()
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    net = train(build=build)
    torch.save(net.state_dict(), path)
    return net


def train(epochs: int = 30, samples: int | None = None, build=build_net):
    """A freshly trained network (`build`: the digits CNN by default). The seed is set before the
    network is built, so its initial weights (drawn from torch's global generator) and the batch
    order are the same on every run."""
    torch = require("torch", "zoo", "the digits CNN")
    torch.manual_seed(SEED)
    net = build()
    x_train, _, y_train, _ = dataset()
    x, y = torch.from_numpy(x_train[:samples]), torch.from_numpy(y_train[:samples])
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(SEED)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            optimizer.step()
    return net.eval()


def load_for_export():
    torch = require("torch", "zoo", "the digits CNN")
    _, x_test, _, _ = dataset()
    return trained_net(), {INPUT: torch.from_numpy(x_test[:4])}, {INPUT: {0: "batch"}}


def calibration_feeds(n: int = 256) -> list[dict]:
    x_train = dataset()[0][:n]
    return [{INPUT: x_train[i : i + 32]} for i in range(0, len(x_train), 32)]


def evaluation_feeds() -> list[dict]:
    x_test = dataset()[1]
    return [{INPUT: x_test[i : i + 64]} for i in range(0, len(x_test), 64)]


def accuracy(run) -> float:
    y_test = dataset()[3]
    logits = np.concatenate([run(feed) for feed in evaluation_feeds()])
    return float((logits.argmax(axis=1) == y_test).mean())


def compare(reference_run, candidate_run, feeds=None) -> dict:
    ref, cand = accuracy(reference_run), accuracy(candidate_run)
    return {"accuracy_reference": ref, "accuracy": cand, "accuracy_drop_points": round(100 * (ref - cand), 3)}
