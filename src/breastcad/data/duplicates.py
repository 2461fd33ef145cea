"""Near duplicates: a 64-bit DCT perceptual hash of each image (pHash: 32x32 grayscale, 2-D
DCT, low 8x8 block above its median) and every pair of hashes within a number of bits; and a
64 x 64 grayscale thumbnail of each image's centred square, with every pair of thumbnails
whose pixels correlate above a threshold (frames of one scan that no hash pairs).

Example:
    >>> import numpy as np
    >>> hamming_pairs(np.array([0b1011, 0b0011, 0xFF00], dtype=np.uint64), 1).tolist()
    [[0, 1, 1]]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

from breastcad.data.imaging import to_gray_float


def _dct_matrix(n: int = 32) -> np.ndarray:
    """The orthonormal DCT-II matrix: `C @ x @ C.T` is `scipy.fft.dctn(x, norm="ortho")`
    (SciPy is not imported for it: image prediction marks training images without it)."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    c = np.sqrt(2 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    c[0] /= np.sqrt(2)
    return c


_DCT = _dct_matrix()


def phash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a decoded image."""
    gray = Image.fromarray(to_gray_float(image).astype(np.float32), mode="F")
    small = np.asarray(gray.resize((32, 32), Image.BILINEAR, reducing_gap=3.0), dtype=np.float64)
    low = (_DCT @ small @ _DCT.T)[:8, :8]
    bits = (low > np.median(low)).reshape(-1)
    return int(np.packbits(bits).view(">u8")[0])


def centre_phash(image: np.ndarray, full: int | None = None) -> int:
    """`phash` of the image's centred square (its longer side cut to the shorter one): how
    MedMNIST made BreastMNIST from BUSI, and how many pipelines make a square input; for a
    square image, its `phash` (`full`, where it is known already)."""
    height, width = image.shape[:2]
    if height == width:
        return phash(image) if full is None else full
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return phash(image[top : top + side, left : left + side])


THUMBNAIL = 64
"""Side of the thumbnails `correlated_pairs` compares; images smaller than this get none."""

SAME_SCENE_CORRELATION = 0.93
"""Pixel correlation of two thumbnails from which the audit pairs the images, where the data
has no patient ids (chosen on BUSI by eye: see `breastcad.data.audit`)."""


def thumbnail(image: np.ndarray) -> bytes | None:
    """The image's centred square as THUMBNAIL x THUMBNAIL 8-bit gray (raw bytes), or None
    for an image smaller than that (a 28 px BreastMNIST or 50 px IDC image: enlarged, any
    two such images correlate)."""
    height, width = image.shape[:2]
    side = min(height, width)
    if side < THUMBNAIL:
        return None
    top, left = (height - side) // 2, (width - side) // 2
    gray = to_gray_float(image[top : top + side, left : left + side]).astype(np.float32)
    small = Image.fromarray(gray, mode="F").resize(
        (THUMBNAIL, THUMBNAIL), Image.BILINEAR, reducing_gap=3.0
    )
    return np.clip(np.asarray(small) * 255 + 0.5, 0, 255).astype(np.uint8).tobytes()


def correlated_pairs(thumbs: np.ndarray, at_least: float, block: int = 1024) -> np.ndarray:
    """All pairs (i < j) of thumbnails (N x pixels, uint8) whose pixels correlate at
    `at_least` or more (Pearson), with the correlation: N x N in blocks of `block` rows
    (memory N x block; a flat thumbnail correlates with none)."""
    x = np.asarray(thumbs, dtype=np.float32)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    found = []
    for start in range(0, len(x), block):
        corr = x[start : start + block] @ x.T
        i, j = np.nonzero(corr >= at_least)
        keep = i + start < j
        found.append(np.stack([i[keep] + start, j[keep], corr[i[keep], j[keep]]], axis=1))
    pairs = np.concatenate(found) if found else np.zeros((0, 3))
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def pixel_hash(pixels: np.ndarray) -> str:
    """sha1 of a uint8 image's pixels and shape: equal for the same picture, whatever file
    format or name it came in."""
    return hashlib.sha1(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()


def hamming_pairs(hashes: np.ndarray, max_distance: int, block: int = 2048) -> np.ndarray:
    """All pairs (i < j, distance) of 64-bit hashes within `max_distance` bits, sorted by i
    then j.

    Many hashes: multi-index hashing. Cut into `max_distance + 1` bit fields, two hashes within
    `max_distance` bits agree on at least one field whole (pigeonhole), so only hashes sharing
    a field's value are compared, a bounded number at a time: near-linear for the hashes of
    real images, where comparing all pairs grows with the square (`benchmarks/
    bench_image_cache.py`: 1.5 s against 10.5 s for 50,000 generated IDC patches). Few
    hashes, or fields too narrow to sort anything out: all pairs, in blocks so memory stays
    bounded (N x block at a time)."""
    h = np.asarray(hashes, dtype=np.uint64)
    fields = max_distance + 1
    if len(h) <= 2 * block or 64 // fields < 8:
        return _all_pairs(h, max_distance, block)
    widths = [64 // fields + (k < 64 % fields) for k in range(fields)]
    shifts = np.cumsum([0, *widths[:-1]])
    fields_of = zip(shifts, widths, strict=True)
    values = [(h >> np.uint64(s)) & np.uint64((1 << w) - 1) for s, w in fields_of]
    found = []
    for k, value in enumerate(values):
        for a, b in _sharing(value, h, max_distance, block):
            keep = np.bitwise_count(h[a] ^ h[b]) <= max_distance
            for earlier in values[:k]:  # a pair is found in the first field it shares, only
                keep &= earlier[a] != earlier[b]
            a, b = a[keep], b[keep]
            found.append(np.minimum(a, b) * len(h) + np.maximum(a, b))
    code = np.sort(np.concatenate(found))
    i, j = code // len(h), code % len(h)
    return np.stack([i, j, np.bitwise_count(h[i] ^ h[j]).astype(np.int64)], axis=1)


CANDIDATES = 4_000_000
"""Pairs compared at once (a few hundred MB of index arrays at most)."""


def _sharing(
    value: np.ndarray, h: np.ndarray, max_distance: int, block: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs of hashes with one `value` of a field, in chunks of at most `CANDIDATES`:
    every pair of a run of equal values; in runs longer than `block`, only the pairs within
    `max_distance` (found block-wise)."""
    order = np.argsort(value, kind="stable")
    starts = np.flatnonzero(np.r_[True, value[order][1:] != value[order][:-1]])
    lengths = np.diff(np.r_[starts, len(h)])
    ends = starts + lengths
    big = lengths > block
    for start, end in zip(starts[big], ends[big], strict=True):
        members = order[start:end]
        pairs = _all_pairs(h[members], max_distance, block)
        yield members[pairs[:, 0]], members[pairs[:, 1]]
    run = np.repeat(np.arange(len(starts)), lengths)  # of each sorted position
    pos = np.flatnonzero(~big[run] & (np.arange(len(h)) < ends[run] - 1))
    later = ends[run[pos]] - pos - 1  # each member against the later members of its run
    total = np.cumsum(later)
    cuts = np.searchsorted(total, np.arange(CANDIDATES, total[-1], CANDIDATES)) if len(pos) else []
    for part in np.split(np.arange(len(pos)), cuts):
        p, n = pos[part], later[part]
        first = np.repeat(p, n)
        offset = np.arange(len(first)) - np.repeat(np.cumsum(n) - n, n)
        yield order[first], order[first + offset + 1]


def _all_pairs(h: np.ndarray, max_distance: int, block: int) -> np.ndarray:
    """`hamming_pairs` by comparing every pair, `block` rows at a time."""
    found = []
    for start in range(0, len(h), block):
        chunk = h[start : start + block]
        dist = np.bitwise_count(chunk[:, None] ^ h[None, :])
        i, j = np.nonzero(dist <= max_distance)
        i = i + start
        keep = i < j
        found.append(np.stack([i[keep], j[keep], dist[i[keep] - start, j[keep]]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 3), dtype=np.int64)


def nearest(queries: np.ndarray, reference: np.ndarray, max_distance: int) -> np.ndarray:
    """For each query hash, the fewest bits in which it differs from any `reference` hash,
    where that is at most `max_distance`; -1 where no reference hash is that near.

    Multi-index hashing as in `hamming_pairs`: a reference hash within `max_distance` bits
    shares one of `max_distance + 1` fields whole, so only those are compared (chunks of at
    most `CANDIDATES` pairs); few hashes or narrow fields: every pair, in chunks."""
    q = np.asarray(queries, dtype=np.uint64)
    ref = np.unique(np.asarray(reference, dtype=np.uint64))
    best = np.full(len(q), 65, dtype=np.int64)
    fields = max_distance + 1
    if not len(q) or not len(ref):
        return np.full(len(q), -1, dtype=np.int64)
    if len(q) * len(ref) <= CANDIDATES or 64 // fields < 8:
        rows = max(1, CANDIDATES // len(ref))
        for start in range(0, len(q), rows):
            chunk = q[start : start + rows]
            best[start : start + rows] = np.bitwise_count(chunk[:, None] ^ ref[None, :]).min(1)
        return np.where(best <= max_distance, best, -1)
    widths = [64 // fields + (k < 64 % fields) for k in range(fields)]
    for shift, width in zip(np.cumsum([0, *widths[:-1]]), widths, strict=True):
        mask = np.uint64((1 << width) - 1)
        field = (ref >> np.uint64(shift)) & mask
        order = np.argsort(field, kind="stable")
        ordered = field[order]
        asked = (q >> np.uint64(shift)) & mask
        lo = np.searchsorted(ordered, asked, "left")
        n = np.searchsorted(ordered, asked, "right") - lo
        total = np.cumsum(n)
        cuts = np.searchsorted(total, np.arange(CANDIDATES, total[-1], CANDIDATES))
        for part in np.split(np.arange(len(q)), cuts):
            count = n[part]
            who = np.repeat(part, count)
            offset = np.arange(len(who)) - np.repeat(np.cumsum(count) - count, count)
            distance = np.bitwise_count(q[who] ^ ref[order[lo[who] + offset]]).astype(np.int64)
            np.minimum.at(best, who, distance)
    return np.where(best <= max_distance, best, -1)
