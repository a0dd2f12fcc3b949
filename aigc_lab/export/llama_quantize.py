"""K-quants (``q4_k_m`` and friends) through llama.cpp's own quantizer, when llama-cpp-python is installed.

The ``gguf`` library quantizes only the simple block formats in numpy; the K-quants (and llama.cpp's per-tensor
mix, e.g. q6_K for the output layer under q4_k_m) come from ``llama_model_quantize``, run on an f32 GGUF we wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ExportError

# name -> llama_ftype (llama.h)
K_QUANTS: dict[str, int] = {"q2_k": 10, "q3_k_m": 12, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17,
                            "q6_k": 18}
INSTALL = ("pip install llama-cpp-python (it builds llama.cpp; a few minutes; in a clone of aigc-lab, `make setup` "
           "builds it with this CPU's instruction sets named, see tools/llama_cmake_args.sh)")


def llama_cpp(quant: str) -> Any:
    """The ``llama_cpp`` module, or an ``ExportError`` saying how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise ExportError(f"quant={quant!r} uses llama.cpp's own quantizer, from llama-cpp-python: install it with "
                          f"{INSTALL}, or choose q8_0 / q4_0, which need nothing else") from None
    return llama_cpp


def quantize_file(src: Path, dst: Path, quant: str, threads: int = 0) -> None:
    """Quantize the GGUF ``src`` (f32) into ``dst`` with llama.cpp's ``llama_model_quantize``."""
    import ctypes

    lc = llama_cpp(quant)
    params = lc.llama_model_quantize_default_params()
    params.ftype = K_QUANTS[quant]
    params.nthread = threads
    rc = lc.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise ExportError(f"llama.cpp's quantizer failed on {src.name} (code {rc}) for {quant}")
