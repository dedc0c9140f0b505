"""Run-length encoding in the competition convention (formats.md).

Flatten the mask in row-major (C) order; ``"start length start length ..."`` with 1-indexed starts; an empty mask
is ``""`` (pandas reads it back as NaN, which decodes to an empty mask too).

``encode_many`` encodes all K masks of an image in one vectorised pass: the masks are bit-packed (8 pixels a
byte, SIMD in numpy), transitions are found with byte-wise XOR, and only the few bytes holding a transition are
unpacked. ``encode_loop`` is the common Kaggle loop, kept as the reference and for benchmarks.
"""

from __future__ import annotations

import math

import numpy as np


def encode_many(masks: np.ndarray) -> list[str]:
    """Encode ``masks: bool [K, H, W]`` (or ``[H, W]`` as K=1) -> K RLE strings."""
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"masks must be [K, H, W] or [H, W], got shape {m.shape}")
    k, h, w = m.shape
    n = h * w
    flat = np.ascontiguousarray(m.reshape(k, n), dtype=bool)
    packed = np.packbits(flat, axis=1)  # [K, ceil(n/8)] bytes, bit 7 of byte j = pixel 8j (SIMD in numpy)
    nbytes = -(-packed.shape[1] // 8) * 8  # whole 64-bit words per class
    if nbytes != packed.shape[1]:
        packed = np.pad(packed, ((0, 0), (0, nbytes - packed.shape[1])))
    nw = nbytes // 8
    pad = nbytes * 8 - n  # zero bits after the last pixel (< 64: the end of a last run lies in its own word)
    flatw = packed.view(np.uint64).ravel()  # [K * nw]; byte order does not matter for a zero test
    # Only words holding bone pixels, and the word after each (where a run may end), can hold a transition:
    # everything below works on those few words instead of the whole image.
    nz = np.flatnonzero(flatw)
    # The word after a non-zero word, unless it is non-zero itself (then it is in nz already) or starts the next
    # class's row (a class's last run is closed by hand below).
    after = nz[np.append(nz[1:] != nz[:-1] + 1, True)[: len(nz)]] + 1
    after = after[after % nw != 0]
    cand = np.concatenate([nz, after])
    cur = flatw[cand]
    first = cand % nw == 0
    prv = flatw[cand - 1 + first]  # any in-range index for row starts; zeroed on the next line
    prv[first] = 0
    # Big-endian words keep pixel order: pixel 64j + t is bit 63 - t of word j.
    cur = cur.byteswap()
    prv = prv.byteswap()
    # x[i-1] for every pixel i: shift right by one, carrying the previous word's last pixel (its bit 0).
    trans = cur ^ ((cur >> np.uint64(1)) | (prv << np.uint64(63)))
    keep = trans != 0
    cand, trans = cand[keep], trans[keep]
    bits = np.unpackbits(trans.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)  # [len, 64]
    rows, cols = np.nonzero(bits)
    pos = np.sort(cand[rows] * 64 + cols)  # flat bit positions over [K, nw * 64]
    nbits = nw * 64
    cls = pos // nbits
    pix = pos % nbits
    # A run that reaches the last pixel ends at n. With padding, that 1 -> 0 step lies inside the padding bits and
    # was found above; without padding it falls off the end and is appended by hand.
    last = flat[:, -1] & (pad == 0)
    out = []
    # pos is sorted, hence grouped by class; split at class boundaries.
    bounds = np.searchsorted(cls, np.arange(k + 1))
    for c in range(k):
        t = pix[bounds[c] : bounds[c + 1]]
        if last[c]:
            t = np.append(t, n)
        if t.size == 0:
            out.append("")
            continue
        runs = t.reshape(-1, 2).copy()
        runs[:, 1] -= runs[:, 0]
        runs[:, 0] += 1
        out.append(" ".join(map(str, runs.ravel().tolist())))
    return out


def encode(mask: np.ndarray) -> str:
    """Encode one ``bool [H, W]`` mask."""
    return encode_many(np.asarray(mask)[None])[0]


def encode_loop(mask: np.ndarray) -> str:
    """The common Kaggle per-mask encoder (reference implementation and benchmark baseline)."""
    pixels = np.asarray(mask).flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def decode(rle: str | float | None, height: int, width: int) -> np.ndarray:
    """``rle`` -> ``bool [height, width]``; ``""``, ``None`` and NaN decode to an empty mask."""
    out = np.zeros(height * width, dtype=bool)
    if rle is None or (isinstance(rle, float) and math.isnan(rle)):
        return out.reshape(height, width)
    s = str(rle).split()
    if not s:
        return out.reshape(height, width)
    if len(s) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(s)}): pairs of start, length expected")
    v = np.asarray(s, dtype=np.int64).reshape(-1, 2)
    starts, lengths = v[:, 0] - 1, v[:, 1]
    if (starts < 0).any() or (lengths < 0).any() or (starts + lengths > height * width).any():
        raise ValueError(f"RLE runs fall outside a {height}x{width} mask")
    # Vectorised fill: +1 at each start, -1 at each end, cumulative sum > 0.
    delta = np.zeros(height * width + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, starts + lengths, -1)
    out = np.cumsum(delta[:-1]) > 0
    return out.reshape(height, width)
