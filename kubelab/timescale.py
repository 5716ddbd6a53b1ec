"""The cluster-wide time scale. Kubernetes' timers keep their default values and names; every
component multiplies them by one factor (--time-scale, e.g. 0.1 = ten times faster) so a demo
or a test can shorten them all together."""

from __future__ import annotations

import os

_scale = float(os.environ.get("KUBELAB_TIME_SCALE", "1") or 1)


def set_scale(scale: float) -> None:
    global _scale
    if scale <= 0:
        raise ValueError("--time-scale must be positive")
    _scale = scale


def scale() -> float:
    return _scale


def scaled(seconds: float) -> float:
    """A Kubernetes duration (in seconds) in this cluster's time."""
    return seconds * _scale
