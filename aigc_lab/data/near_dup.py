"""Near-duplicate detection: MinHash over character n-grams, LSH banding, exact Jaccard check.

Character n-grams work in every script (CJK has no spaces between words). Hashing is vectorised with
numpy over all rows at once, so ~10k short texts take well under a second; candidate pairs from the
LSH buckets are confirmed with the exact Jaccard similarity of their n-gram sets, so nothing is
removed on an estimate. Deterministic for a given seed (no use of Python's salted ``hash``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..progress import progress_bar

_BASE = np.uint64(0x100000001B3)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_PROGRESS_SHINGLES = 2_000_000
_MAX_BUCKET_COMPARE = 64
_ESTIMATE_SLACK = 0.2
_SPACES = re.compile(r"\s+")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial hashes over all 64 bits."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def shingle_hashes(texts: Sequence[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """64-bit hashes of every character n-gram of every text (lower-cased, whitespace collapsed).

    Returns ``(hashes, offsets, counts)``: row ``i``'s hashes are ``hashes[offsets[i]:offsets[i]+counts[i]]``.
    Texts shorter than ``ngram`` are padded, so each row has at least one shingle.
    """
    prepared = [_SPACES.sub(" ", t.lower()).strip().ljust(ngram, "\x01") for t in texts]
    lengths = np.fromiter(map(len, prepared), dtype=np.int64, count=len(prepared))
    codes = np.frombuffer("".join(prepared).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    span = len(codes) - ngram + 1
    h = np.zeros(span, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(ngram):
            h = h * _BASE + codes[k:k + span]
        h = _mix(h)
    starts = np.cumsum(lengths) - lengths
    counts = lengths - ngram + 1
    offsets = np.cumsum(counts) - counts
    idx = np.arange(int(counts.sum())) - np.repeat(offsets, counts) + np.repeat(starts, counts)
    return h[idx], offsets, counts


def _rows_per_band(threshold: float, num_perm: int, recall: float = 0.995) -> int:
    """Largest band width whose LSH still proposes pairs at ``threshold`` with probability >= ``recall``."""
    best = 1
    for r in range(1, num_perm + 1):
        b = num_perm // r
        if 1 - (1 - threshold**r) ** b >= recall:
            best = r
    return best


def near_duplicates(texts: Sequence[str], threshold: float = 0.85, *, ngram: int = 5, num_perm: int = 64,
                    seed: int = 0, progress: bool | None = None) -> np.ndarray:
    """For each text, the index of an earlier kept text it nearly duplicates, or -1 (keep it).

    Two texts are near duplicates when the Jaccard similarity of their character ``ngram`` sets is at
    least ``threshold``. The first of a group is kept; later ones point at it.
    """
    n = len(texts)
    dup_of = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return dup_of
    hashes, offsets, counts = shingle_hashes(texts, ngram)
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    sig = np.empty((num_perm, n), dtype=np.uint32)
    if progress is None:
        progress = len(hashes) * num_perm > _PROGRESS_SHINGLES * 64
    perms = range(num_perm)
    if progress:
        perms = progress_bar(perms, desc="near-duplicates (MinHash)", unit="perm")
    with np.errstate(over="ignore"):
        for p in perms:
            sig[p] = np.minimum.reduceat((hashes * a[p] + b[p]) >> np.uint64(32), offsets)

    lo, hi = _candidate_pairs(sig, _rows_per_band(threshold, num_perm))
    if lo.size:  # drop pairs whose MinHash estimate is far below the threshold before the exact check
        est = np.concatenate([(sig[:, lo[k:k + 65536]] == sig[:, hi[k:k + 65536]]).mean(axis=0)
                              for k in range(0, lo.size, 65536)])
        close = est >= threshold - _ESTIMATE_SLACK
        lo, hi = lo[close], hi[close]
        order = np.lexsort((lo, hi))
        lo, hi = lo[order], hi[order]

    sets: dict[int, np.ndarray] = {}

    def shingles(i: int) -> np.ndarray:
        if i not in sets:
            sets[i] = np.unique(hashes[offsets[i]:offsets[i] + counts[i]])
        return sets[i]

    for i, j in zip(lo.tolist(), hi.tolist(), strict=True):  # by j, then i: earlier rows are settled first
        if dup_of[j] >= 0 or dup_of[i] >= 0:
            continue
        si, sj = shingles(i), shingles(j)
        inter = np.intersect1d(si, sj, assume_unique=True).size
        if inter / (si.size + sj.size - inter) >= threshold:
            dup_of[j] = i
    return dup_of


def _candidate_pairs(sig: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs ``(lo, hi)``, ``lo < hi``, that share a band of ``r`` MinHash values (LSH), deduplicated."""
    num_perm, n = sig.shape
    found = []
    weights = (np.arange(r, dtype=np.uint64) * np.uint64(2) + np.uint64(1)) * _M2
    with np.errstate(over="ignore"):
        for band in range(num_perm // r):
            keys = _mix((sig[band * r:(band + 1) * r].astype(np.uint64) * weights[:, None]).sum(axis=0)
                        + np.uint64(band))
            order = np.argsort(keys, kind="stable")
            ks = keys[order]
            for k in range(1, _MAX_BUCKET_COMPARE + 1):  # neighbours at distance k inside a bucket
                same = ks[k:] == ks[:-k]
                if not same.any():
                    break
                a, b = order[:-k][same], order[k:][same]
                found.append(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b))
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pairs = np.unique(np.concatenate(found))
    return pairs // n, pairs % n
