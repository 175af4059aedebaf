"""Offline datasets of transitions (contract 4): the in-memory :class:`Dataset`,
its on-disk format (``FORMAT.md``), collection from any task and importers."""
from robotrl.datasets.collect import collect
from robotrl.datasets.dataset import Dataset
from robotrl.datasets.format import DatasetError, load_dataset, save_dataset

__all__ = ["Dataset", "DatasetError", "collect", "load_dataset", "save_dataset"]
