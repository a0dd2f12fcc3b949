"""Streaming inference: a decode loop that timestamps every token and publishes it on the bus."""

from .detok import IncrementalDetokenizer
from .engine import GenerationParams, TokenStream, generate
from .metrics import summarize

__all__ = ["GenerationParams", "IncrementalDetokenizer", "TokenStream", "generate", "summarize"]
