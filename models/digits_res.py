"""A small residual CNN trained deterministically on scikit-learn's 8×8 digits (same data as `digits`).

Stem Conv-BN-ReLU (32), three basic blocks (32; 64 with stride 2 and a 1×1 projection; 64),
mean over space, Linear: two residual streams whose channels structured pruning must cut
together. Metric: accuracy on the held-out split of `digits`.
"""

from onnxcomp.cache import cache_dir
from onnxcomp.extras import require

from . import digits

SEED = 0
EXPORT_VERSION = 2  # 2: the pool is a mean over (H, W); torch exported adaptive_avg_pool2d as as_strided + Gather
WEIGHTS_VERSION = 1
INPUT = digits.INPUT
OUTPUTS = digits.OUTPUTS
dataset, calibration_feeds, evaluation_feeds, accuracy, compare = (
    digits.dataset,
    digits.calibration_feeds,
    digits.evaluation_feeds,
    digits.accuracy,
    digits.compare,
)


def build_net():
    torch = require("torch", "zoo", "the residual digits CNN")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(y + (x if self.proj is None else self.proj(x)))

    class ResidualDigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
            self.blocks = nn.Sequential(Block(32, 32, 1), Block(32, 64, 2), Block(64, 64, 1))
            self.fc = nn.Linear(64, 10)

        def forward(self, image):
            x = self.blocks(self.stem(image))
            return self.fc(x.mean(dim=(2, 3)))

    return ResidualDigitsCNN()


def trained_net():
    """Train (or load from the cache) the network; same seed → same weights (`digits.train`)."""
    return digits.cached_net(cache_dir("models") / f"digits_res_v{WEIGHTS_VERSION}.pt", build_net)


def load_for_export():
    torch = require("torch", "zoo", "the residual digits CNN")
    _, x_test, _, _ = dataset()
    return trained_net(), {INPUT: torch.from_numpy(x_test[:4])}, {INPUT: {0: "batch"}}
