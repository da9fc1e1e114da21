"""MNIST: fetched, verified and cached (``mnist``), and augmented in batches on the device (``augment``)."""

from .augment import MNIST_MEAN, MNIST_STD, augment_batch, normalize, normalize_array
from .mnist import (CACHE_ENV, DATA_ENV, MNIST, DataError, cache_info, default_cache_dir, fetch_mnist, load_mnist,
                    read_cache, resolve_data_dir)

__all__ = ["MNIST_MEAN", "MNIST_STD", "augment_batch", "normalize", "normalize_array", "CACHE_ENV", "DATA_ENV",
           "MNIST", "DataError", "cache_info", "default_cache_dir", "fetch_mnist", "load_mnist", "read_cache",
           "resolve_data_dir"]
