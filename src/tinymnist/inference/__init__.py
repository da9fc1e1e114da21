"""Inference: make any image MNIST-like (``preprocess``), predict, evaluate, report, export,
and the engine the server runs (``engine``)."""
