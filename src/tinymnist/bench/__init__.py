"""Benchmarks: training speed and accuracy over seeds (``training``), inference (``inference``),
the server under load (``load``), and sweeps of training processes (``sweep``)."""
