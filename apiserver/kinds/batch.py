"""batch kinds."""

from __future__ import annotations
