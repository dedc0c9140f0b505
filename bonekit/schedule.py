"""Schedules as pure functions of the global step, so a resumed run sees exactly the values of an unbroken one."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, base: float, warmup: int = 0, final: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``base`` to ``final`` at ``total``."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * t))


def momentum_at(step: int, total: int, start: float = 0.99, end: float = 1.0) -> float:
    """EMA momentum for teacher/key encoders: cosine from ``start`` to ``end`` (BYOL's schedule)."""
    t = min(1.0, step / max(1, total))
    return end - (end - start) * 0.5 * (1.0 + math.cos(math.pi * t))
