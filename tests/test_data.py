import gzip
import struct

import numpy as np
import pytest

from tinymnist.data.mnist import (CACHE_FILE, DataError, IDX_FILES, arrays_from_classic_pickle, cache_info,
                            default_data_dir, fetch_mnist, load_mnist, parse_idx, read_cache, verify_arrays)


def write_idx(path, array, compress=False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw, compresslevel=1) if compress else raw)


def make_idx_dir(root, arrays, layout="torchvision", compress=True):
    directory = root / "MNIST" / "raw" if layout == "torchvision" else root
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_FILES.items():
        write_idx(directory / (stem + (".gz" if compress else "")), arrays[key], compress)
    return directory


@pytest.mark.parametrize("layout,compress", [("torchvision", True), ("flat", False)])
def test_fetch_from_local_idx_and_cache_round_trip(tmp_path, mnist_arrays, layout, compress):
    make_idx_dir(tmp_path / "src", mnist_arrays, layout, compress)
    cache_dir = tmp_path / "cache"
    path = fetch_mnist(cache_dir, source_dir=tmp_path / "src", sources=("local",))
    assert path == cache_dir / CACHE_FILE
    loaded = read_cache(cache_dir)
    for key in IDX_FILES:
        assert np.array_equal(loaded[key], mnist_arrays[key])
    data = load_mnist(cache_dir, fetch=False)
    assert tuple(data.train_images.shape) == (60000, 28, 28) and str(data.train_images.dtype) == "torch.uint8"
    assert tuple(data.test_labels.shape) == (10000,)
    # a second fetch uses the cache: the source can be gone
    assert fetch_mnist(cache_dir, source_dir=tmp_path / "missing", sources=("local",)) == path


def test_corrupted_idx_is_rejected_and_leaves_no_cache(tmp_path, mnist_arrays):
    bad = {k: v.copy() for k, v in mnist_arrays.items()}
    bad["test_images"][123, 14, 14] ^= 0x40  # one pixel off
    make_idx_dir(tmp_path / "src", bad, compress=False)
    with pytest.raises(DataError, match="sha256"):
        fetch_mnist(tmp_path / "cache", source_dir=tmp_path / "src", sources=("local",))
    assert not (tmp_path / "cache" / CACHE_FILE).exists()


def test_truncated_idx_is_rejected_with_a_clear_error(tmp_path, mnist_arrays):
    src = make_idx_dir(tmp_path / "src", mnist_arrays, compress=False)
    f = src / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(DataError, match="truncated"):
        fetch_mnist(tmp_path / "cache", source_dir=tmp_path / "src", sources=("local",))
    assert not (tmp_path / "cache" / CACHE_FILE).exists()


def test_truncated_gzip_is_rejected(tmp_path, mnist_arrays):
    src = make_idx_dir(tmp_path / "src", mnist_arrays, compress=True)
    f = src / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match="t10k-labels"):
        fetch_mnist(tmp_path / "cache", source_dir=tmp_path / "src", sources=("local",))


def test_missing_files_and_every_failed_source_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        fetch_mnist(tmp_path / "cache", source_dir=tmp_path / "empty", sources=("local",))
    assert "train-images-idx3-ubyte" in str(err.value) and "local" in str(err.value)


def test_parse_idx_rejects_bad_magic():
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"\x00\x00\x0d\x03" + b"\x00" * 20, "x")


def test_verify_catches_wrong_label_counts(mnist_arrays):
    verify_arrays(mnist_arrays)
    bad = dict(mnist_arrays, train_labels=mnist_arrays["train_labels"].copy())
    bad["train_labels"][0] = (bad["train_labels"][0] + 1) % 10
    with pytest.raises(DataError, match="class counts"):
        verify_arrays(bad)


def test_corrupted_cache_is_detected_and_refetched(tmp_path, mnist_arrays):
    make_idx_dir(tmp_path / "src", mnist_arrays)
    cache_dir = tmp_path / "cache"
    path = fetch_mnist(cache_dir, source_dir=tmp_path / "src", sources=("local",))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="unreadable|does not verify"):
        read_cache(cache_dir)
    assert cache_info(cache_dir)["verified"] is False
    fetch_mnist(cache_dir, source_dir=tmp_path / "src", sources=("local",))
    assert cache_info(cache_dir)["verified"] is True


def test_classic_pickle_is_hash_checked_before_unpickling(tmp_path):
    import pickle

    marker = tmp_path / "ran"
    evil = gzip.compress(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(DataError, match="sha256"):
        arrays_from_classic_pickle(evil)
    assert not marker.exists()


def test_restricted_unpickler_refuses_anything_but_arrays(tmp_path):
    import hashlib
    import pickle

    marker = tmp_path / "ran"
    evil = gzip.compress(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        arrays_from_classic_pickle(evil, expected_sha256=hashlib.sha256(evil).hexdigest())
    assert not marker.exists()


def test_data_dir_follows_env_then_xdg(tmp_path):
    assert default_data_dir({"TINYMNIST_DATA": str(tmp_path)}) == tmp_path
    assert default_data_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "tinymnist"


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
