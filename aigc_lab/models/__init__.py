"""Model selection: resolve a name (local folder, hub id, ``starter:*``), load it, describe it."""

from .handle import ModelHandle
from .loader import load
from .starter import STARTER_ARCHS, STARTER_SIZES, build_starter, train_tokenizer

__all__ = ["ModelHandle", "STARTER_ARCHS", "STARTER_SIZES", "build_starter", "load", "train_tokenizer"]
