"""Datasets served through a Lightning DataModule: decoded once into uint8 tensors, or streamed from disk."""

from vae_lab.data.batches import InMemoryBatches
from vae_lab.data.datamodule import BINARIZE, VAEDataModule
from vae_lab.data.registry import DATASETS, RawData, load_dataset
from vae_lab.data.spec import DataSpec
from vae_lab.data.stream import StreamingBatches, StreamSource

__all__ = ["BINARIZE", "DATASETS", "DataSpec", "InMemoryBatches", "RawData", "StreamSource", "StreamingBatches",
           "VAEDataModule", "load_dataset"]
