"""Self-supervised methods, one small file each, built from lightly's heads, losses and utilities.

Adding a method is one file: subclass :class:`~selfsup.methods.base.Method`, decorate with ``@register("name")``,
import it below.
"""

from __future__ import annotations

from selfsup.methods import byol, densecl, mim, mimunet, moco, simclr, vicregl  # noqa: F401  (fill the registry)
from selfsup.methods.base import METHODS, Method, register

__all__ = ["METHODS", "Method", "register"]
