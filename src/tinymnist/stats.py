"""Summaries of repeated measurements: one rule for every report."""

from __future__ import annotations

import math
import statistics


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation; the spread of a single run is 0.0 (not undefined)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def spread(key: str, values: list[float]) -> dict:
    """``{key: values, key_mean: ..., key_std: ...}``, or nothing when no run reported the figure."""
    if not values:
        return {}
    mean, std = mean_std(values)
    return {key: values, f"{key}_mean": mean, f"{key}_std": std}


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 <= q <= 1) of already sorted values; NaN when empty."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
