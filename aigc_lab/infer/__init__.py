"""Streaming inference: a decode loop that timestamps every token and publishes it on the bus."""

from .detok import IncrementalDetokenizer
from .engine import TokenStream, generate
from .metrics import summarize
from .params import GenerationParams

__all__ = ["GenerationParams", "IncrementalDetokenizer", "TokenStream", "generate", "summarize"]
