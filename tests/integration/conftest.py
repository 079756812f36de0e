"""Integration tier: `train(cfg)`, `evaluate_model(cfg)` and the other tools' functions called in-process, on
configs composed with Hydra's compose API once per test process (`compose`), and the tiny trained runs of
tests/trained.py shared read-only (`trained_run`, in tests/conftest.py)."""

import copy
import functools

import pytest


@functools.lru_cache(maxsize=None)
def _composed(config_name: str, overrides: tuple[str, ...]):
    from hydra import compose, initialize_config_dir

    from vae_lab.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


@pytest.fixture
def compose():
    """compose(*overrides, config="train") -> a fresh copy of the composed config (composed once per process for
    each distinct (config, overrides); the copy is the test's own to change)."""

    def composed(*overrides: str, config: str = "train"):
        return copy.deepcopy(_composed(config, tuple(str(o) for o in overrides)))

    return composed


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """The built-in datasets' files for every test of a process: MNIST and Fashion-MNIST (copied from ../shared/data;
    skipped when absent) and a small CIFAR-10 in the official format (load it after `trust_cifar10_files`)."""
    from datasets_fixtures import copy_mnist, write_cifar10

    root = tmp_path_factory.mktemp("data")
    copy_mnist(root, "MNIST")
    copy_mnist(root, "FashionMNIST")
    write_cifar10(root, n_train=40, n_test=12)
    return root
