"""Seeded train/val/test split by source row, so augmented copies never leak across splits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .dataset import SOURCE, Splits

if TYPE_CHECKING:
    from .dataset import Dataset


def _sizes(groups: int, val: float, test: float) -> tuple[int, int]:
    n_val, n_test = round(val * groups), round(test * groups)
    if val > 0 and n_val == 0 and groups - n_test >= 2:
        n_val = 1  # a requested split is never silently empty while there is data to spare
    if test > 0 and n_test == 0 and groups - n_val >= 2:
        n_test = 1
    return n_val, n_test


def split(ds: Dataset, val: float = 0.1, test: float = 0.1, *, seed: int = 0) -> Splits:
    """Shuffle source rows with ``seed`` and cut them into val, test and train (the rest).

    Fractions count source rows (an original and its augmented copies are one unit), so the three
    splits are disjoint, together hold every row, and the same seed always gives the same split.
    """
    for name, f in (("val", val), ("test", test)):
        if not 0 <= f < 1:
            raise DataError(f"{name} is a fraction in [0, 1), not {f!r}")
    if val + test >= 1:
        raise DataError(f"val + test = {val + test:g} leaves nothing to train on; keep it below 1")
    sources = ds._df[SOURCE].to_numpy()
    groups = np.unique(sources)
    if len(groups) < 1:
        raise DataError("cannot split an empty dataset")
    order = np.random.default_rng(seed).permutation(groups)
    n_val, n_test = _sizes(len(groups), val, test)
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    masks = {name: np.isin(sources, ids) for name, ids in parts.items()}
    sizes = {name: int(m.sum()) for name, m in masks.items()}
    marked = ds._derive(ds._df)  # one split step, shared by the three reports
    marked._emit("split", len(ds), sum(sizes.values()), 0, seed=seed, val=val, test=test, sizes=sizes,
                 groups={name: int(len(ids)) for name, ids in parts.items()})
    out = {name: marked._derive(ds._df[m]) for name, m in masks.items()}
    return Splits(train=out["train"], val=out["val"], test=out["test"])
