"""Streaming inference: a decode loop that timestamps every token and publishes it on the bus."""

from .compiled import CompileError, compile_model
from .cpu_gemv import KernelBuildError, build_kernel, fast_cpu
from .detok import IncrementalDetokenizer
from .engine import TokenStream, generate
from .metrics import summarize
from .params import GenerationParams

__all__ = ["CompileError", "GenerationParams", "IncrementalDetokenizer", "KernelBuildError", "TokenStream",
           "build_kernel", "compile_model", "fast_cpu", "generate", "summarize"]
