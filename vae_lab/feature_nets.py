"""Feature networks for sample quality (FID, precision/recall): Inception-v3 from a weights file the user provides,
or a small classifier trained on the dataset's train split and cached (the usual MNIST practice).

A FeatureNet maps images (N, C, H, W) in [0, 1] to features (N, F) and says in `description` what it is; every
output that reports a number computed through it carries that description.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vae_lab.errors import ConfigError, DataError

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_HINT = (f"put torch-fidelity's {INCEPTION_FILE} there (TensorFlow's 2015-12-05 FID Inception-v3 ported to "
                  "PyTorch: the weights that make FID comparable with papers; github.com/toshas/torch-fidelity "
                  "releases), or use fid.features=mnist_classifier")
CLASSIFIER_NAMES = ("mnist_classifier", "classifier")  # a classifier of the dataset's own train split


@dataclass
class FeatureNet:
    net: nn.Module
    description: str
    extract: callable  # (net, x in [0, 1]) -> (N, F)

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 200) -> torch.Tensor:
        self.net.eval()
        device = next(self.net.parameters()).device
        return torch.cat([self.extract(self.net, x[i:i + batch_size].to(device)).double().cpu()
                          for i in range(0, len(x), batch_size)])


# ---------------------------------------------------------------- Inception-v3 from a file


def check_weights_file(path: str) -> Path:
    """The Inception weights file, or one DataError line saying where to put which weights."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"fid.features={path}: no such weights file; {INCEPTION_HINT}")
    return file


def inception(path: str) -> FeatureNet:
    """torchmetrics' (torch-fidelity's) FID Inception-v3, 2048-d pool3 features, weights read from `path`."""
    file = check_weights_file(path)
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=str(file))
    except ModuleNotFoundError as err:  # torch-fidelity is an optional dependency
        raise ConfigError(f"fid.features=<Inception weights> needs torch-fidelity (pip install torch-fidelity): {err}")
    except Exception as err:  # a file that is not these weights: torch.load or the state dict refuses it
        raise DataError(f"fid.features={path}: not the FID Inception weights ({str(err).splitlines()[0]}); "
                        f"{INCEPTION_HINT}") from None

    def extract(net, x):  # uint8 RGB, resized to 299 inside the network
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return net(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).reshape(len(x), -1)

    return FeatureNet(net, f"Inception-v3 pool3 (2048-d), FID weights {file.name}", extract)


# ---------------------------------------------------------------- a small classifier of the dataset


class SmallClassifier(nn.Module):
    """Two stride-2 convs and a 128-d hidden layer: its activations are the features."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 32, features: int = 128):
        super().__init__()
        c, h, w = in_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        flat = 2 * width * ((h + 3) // 4) * ((w + 3) // 4)
        self.hidden = nn.Sequential(nn.Linear(flat, features), nn.ReLU())
        self.head = nn.Linear(features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(batches, in_shape, num_classes: int, epochs: int, seed: int) -> SmallClassifier:
    """Adam 1e-3 on cross-entropy over `epochs` passes of `batches` ((x, y) in [0, 1], labels >= 0)."""
    torch.manual_seed(seed)
    net = SmallClassifier(tuple(in_shape), num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: SmallClassifier, batches) -> float:
    right = total = 0
    for x, y in batches:
        right += int((net(x).argmax(1) == y).sum())
        total += len(y)
    return right / max(total, 1)


def classifier(datamodule, cache_dir: str | Path, epochs: int = 2, seed: int = 0) -> FeatureNet:
    """The classifier of the datamodule's train split (trained once, then read from `cache_dir`)."""
    from safetensors.torch import load_file, save_file

    from vae_lab.io import atomic_write_json

    spec, h = datamodule.spec, datamodule.hparams
    if not spec.num_classes:
        raise DataError(f"fid.features=mnist_classifier trains a classifier of the data's labels; {h.name} is "
                        f"unlabelled: use fid.features=<Inception weights file> ({INCEPTION_FILE})")
    key = {"dataset": h.name, "options": h.options, "data_dir": str(Path(h.data_dir).expanduser().resolve()),
           "binarize": h.binarize, "seed": h.seed, "shape": list(spec.shape), "classes": spec.num_classes,
           "epochs": epochs, "net_seed": seed}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = Path(cache_dir).expanduser()
    weights, card = folder / f"classifier_{h.name}_{digest}.safetensors", folder / f"classifier_{h.name}_{digest}.json"
    net = SmallClassifier(tuple(spec.shape), spec.num_classes)
    if weights.is_file() and card.is_file():
        net.load_state_dict(load_file(weights))
        info = json.loads(card.read_text())
    else:
        net = train_classifier(datamodule.train_dataloader(), spec.shape, spec.num_classes, epochs, seed)
        held_out = datamodule.test_dataloader() if spec.has_test else datamodule.val_dataloader()
        info = {**key, "accuracy": accuracy(net, held_out), "accuracy_split": "test" if spec.has_test else "val"}
        folder.mkdir(parents=True, exist_ok=True)
        save_file(net.state_dict(), str(weights))
        atomic_write_json(card, info)
    description = (f"classifier of {h.name}'s train split (2 convs + 128-d hidden layer, {epochs} epochs, "
                   f"{info['accuracy_split']} accuracy {info['accuracy']:.4f}; {weights})")
    return FeatureNet(net.eval(), description, lambda n, x: n.features(x))


def feature_net(features: str, datamodule, cache_dir: str | Path, epochs: int = 2, seed: int = 0) -> FeatureNet:
    """fid.features: a classifier name (CLASSIFIER_NAMES) or the path of the Inception weights file."""
    if features in CLASSIFIER_NAMES:
        return classifier(datamodule, cache_dir, epochs, seed)
    return inception(features)
