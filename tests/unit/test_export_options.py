"""What export and training check before any model runs: dataset.options.classes keeps exactly those classes in
every split and refuses bad lists in one line; encode refuses a family without a flat latent code."""

import pytest
import torch

from datasets_fixtures import copy_mnist
from vae_lab.data.datamodule import VAEDataModule
from vae_lab.errors import ConfigError
from vae_lab.export import need_flat_code


def test_families_without_a_flat_code_are_told_in_one_line():
    class Hierarchy:
        flat_code, family = False, "hierarchical"

    with pytest.raises(ConfigError, match="needs a flat latent code.*hierarchical family"):
        need_flat_code(Hierarchy(), "scripts/encode.py")


def _splits(dm: VAEDataModule) -> dict:
    dm.setup()
    return {s: torch.cat([y for _, y in getattr(dm, f"{s}_dataloader")()]) for s in ("train", "val", "test")
            if s != "test" or dm.spec.has_test}


def test_classes_keeps_exactly_those_classes_in_every_split(tmp_path):
    root = copy_mnist(tmp_path)
    kept = [0, 3, 8]
    dm = VAEDataModule("mnist", str(root), batch_size=5000, download=False, options={"classes": kept})
    full = VAEDataModule("mnist", str(root), batch_size=5000, download=False)
    got, every = _splits(dm), _splits(full)
    for split, labels in got.items():
        assert sorted(labels.unique().tolist()) == kept, split
    expected = sum(int(torch.isin(every[s], torch.tensor(kept)).sum()) for s in ("train", "val"))
    assert len(got["train"]) + len(got["val"]) == expected  # nothing of those classes lost
    assert len(got["test"]) == int(torch.isin(every["test"], torch.tensor(kept)).sum())
    assert dm.spec.num_classes == 10  # labels keep their indices


@pytest.mark.parametrize("classes,message", [([], "non-empty list"), ([12], "classes 0..9"), ("3", "list")])
def test_bad_classes_are_one_line(classes, message):
    dm = VAEDataModule("digits", "unused", download=False, options={"classes": classes})
    with pytest.raises(ConfigError, match=message):
        dm.setup()


def test_classes_compose_for_train_py():
    from vae_lab.configs import compose_train

    cfg = compose_train(["dataset=digits", "dataset.options.classes=[0,1,2,3,4,5,6,7,8]"])
    assert list(cfg.dataset.options.classes) == list(range(9))
