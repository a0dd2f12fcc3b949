"""Model selection: resolve a name (local folder, hub id, ``starter:*``), estimate its memory, load it, describe it.

Importing this package registers the LSTM baseline (``model_type="aigc-lstm"``) with the ``transformers``
Auto classes, so saved LSTM folders load like any other model.
"""

from . import lstm  # noqa: F401  (registers LSTMConfig / LSTMForCausalLM with the Auto classes)
from .catalog import catalog
from .handle import ModelHandle
from .known import KNOWN_CONFIGS
from .loader import load
from .lstm import LSTMConfig, LSTMForCausalLM
from .memory import MemoryEstimate, available_memory, estimate_memory
from .starter import STARTER_ARCHS, STARTER_SIZES, build_starter, starter_config, starter_names, train_tokenizer

__all__ = ["KNOWN_CONFIGS", "LSTMConfig", "LSTMForCausalLM", "MemoryEstimate", "ModelHandle", "STARTER_ARCHS",
           "STARTER_SIZES", "available_memory", "build_starter", "catalog", "estimate_memory", "load",
           "starter_config", "starter_names", "train_tokenizer"]
