"""Only the CUDA-library noise of torchao (and torch's pytree enum deprecation) is dropped; other records pass."""

from __future__ import annotations

import logging

import aigc_lab  # noqa: F401 - installs the filters


def test_the_noise_is_dropped_and_nothing_else(caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("torchao").warning("Failed to load /x/torchao/_C_mxfp8.so: Could not load this library")
    logging.getLogger("torch.utils._pytree").warning("<enum 'K'> is an Enum subclass ... Calling register_constant()")
    logging.getLogger("torchao").warning("quantize_ skipped 3 layers")
    logging.getLogger("torch.utils._pytree").warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["quantize_ skipped 3 layers", "something else"]
