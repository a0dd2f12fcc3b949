"""Streaming inference: a decode loop that timestamps every token and publishes it on the bus."""

from .compiled import CompileError, compile_model
from .detok import IncrementalDetokenizer
from .engine import TokenStream, generate
from .metrics import summarize
from .params import GenerationParams

__all__ = ["CompileError", "GenerationParams", "IncrementalDetokenizer", "TokenStream", "compile_model", "generate",
           "summarize"]
