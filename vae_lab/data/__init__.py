"""Datasets decoded once into uint8 tensors and served as in-memory batches through a Lightning DataModule."""

from vae_lab.data.batches import InMemoryBatches
from vae_lab.data.datamodule import BINARIZE, VAEDataModule
from vae_lab.data.registry import DATASETS, RawData, load_dataset
from vae_lab.data.spec import DataSpec

__all__ = ["BINARIZE", "DATASETS", "DataSpec", "InMemoryBatches", "RawData", "VAEDataModule", "load_dataset"]
