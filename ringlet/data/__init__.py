"""Datasets: Fashion-MNIST from the Debian package, standard formats from a user folder, synthetic data."""

from ringlet.data.datasets import (DATASET_NAMES, Dataset, DatasetMissingError, load_dataset,
                                   dataset_info)

__all__ = ["DATASET_NAMES", "Dataset", "DatasetMissingError", "load_dataset", "dataset_info"]
