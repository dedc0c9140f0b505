"""Multi-label masks as class bits: bit ``k % 32`` of word ``k // 32`` is class ``k``.

A 1024² sample is 4 MB of mask words instead of 30 MB of bools, and nearest-neighbour warping works on the words
directly. Unpacking happens on the device, batched.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def pack(mask: np.ndarray) -> np.ndarray:
    """``bool [K, H, W]`` -> ``int32 [ceil(K/32), H, W]`` class bits."""
    k, h, w = mask.shape
    words = np.zeros((math.ceil(k / 32), h, w), dtype=np.uint32)
    for c in range(k):
        words[c // 32] |= mask[c].astype(np.uint32) << np.uint32(c % 32)
    return words.view(np.int32)


def unpack(words: torch.Tensor | np.ndarray, k: int) -> torch.Tensor:
    """``int32 [..., W, H, W]`` class words -> ``bool [..., K, H, W]`` (runs on the words' device)."""
    t = torch.as_tensor(words)
    if t.device.type == "cpu":
        # numpy's unpackbits is ~3x faster than shifts on the CPU: bytes of each word, little bit order.
        a = t.numpy()
        bits = np.unpackbits(a.view(np.uint8).reshape(a.shape + (4,)), axis=-1, bitorder="little")
        bits = np.moveaxis(bits, -1, -3)  # [..., W, 32, H, W']
        bits = bits.reshape(a.shape[:-3] + (a.shape[-3] * 32,) + a.shape[-2:])[..., :k, :, :]
        return torch.from_numpy(np.ascontiguousarray(bits).view(bool))
    shifts = torch.arange(32, device=t.device, dtype=torch.int32).view(32, 1, 1)
    planes = []
    for j in range(t.shape[-3]):
        n = min(32, k - 32 * j)
        w = t[..., j : j + 1, :, :]
        planes.append(((w >> shifts[:n]) & 1).bool())
    return torch.cat(planes, dim=-3)
