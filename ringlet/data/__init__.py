"""Datasets: Fashion-MNIST from the Debian package, standard formats from a user folder, synthetic data,
the user's own ImageFolder trees and .npy arrays."""

from ringlet.data.datasets import DATASET_NAMES, Dataset, DatasetMissingError, dataset_info, load_dataset
from ringlet.data.formats import DatasetFormatError
from ringlet.data.sources import channel_stats, load_arrays, parse_normalize

__all__ = ["DATASET_NAMES", "Dataset", "DatasetMissingError", "DatasetFormatError", "load_dataset",
           "dataset_info", "channel_stats", "load_arrays", "parse_normalize"]
