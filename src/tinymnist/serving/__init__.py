"""Serving: the FastAPI app and page (``app``) and the inference worker processes (``workers``).

Nothing is imported here: a worker process imports ``workers`` without FastAPI."""
