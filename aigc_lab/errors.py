"""Every error a user can cause, in one family.

Catch ``AigcLabError`` to handle anything aigc-lab raises on purpose; each subclass names the kind of
mistake and its message says what to do about it. Bugs stay ordinary Python exceptions.
"""

from __future__ import annotations


class AigcLabError(Exception):
    """Root of every error a user of aigc-lab can cause; the message says how to fix it."""


class ProtocolError(AigcLabError, ValueError):
    """A comm message does not follow protocol v1 (docs/protocol.md)."""


class DataError(AigcLabError, ValueError):
    """Input data cannot be read or lacks what was asked for (file, line, column named)."""


class ModelNotFoundError(AigcLabError, LookupError):
    """A model name resolves to neither a local folder, a cached hub model, nor a ``starter:`` model."""


class ModelLoadError(AigcLabError):
    """A model was found but cannot be loaded safely (pickled weights, remote code, broken files)."""


class ModelTooLargeError(AigcLabError, MemoryError):
    """Loading the model would exceed the memory this machine has free."""


class GenerationConfigError(AigcLabError, ValueError):
    """Generation parameters are out of range or inconsistent."""


class RunCancelledError(AigcLabError):
    """A run was cancelled (from the panel, ``.cancel()`` or a kernel interrupt) before it finished."""


class ConversationError(DataError):
    """A conversation is malformed (unknown role, empty turn, two assistant turns in a row...): file and row named."""


class ChatTemplateError(AigcLabError, ValueError):
    """No chat template for a model, an unknown template name, or a template whose turn markers are not tokens."""


class ExportError(AigcLabError, ValueError):
    """A model, target or option cannot be exported (checked before anything is written); the message says why."""


class KernelBuildError(AigcLabError, RuntimeError):
    """The engine's CPU kernel could not be built here (no C++ compiler?); models work unchanged without it."""


class CompileError(AigcLabError, RuntimeError):
    """``torch.compile`` could not compile this model here; the eager model still works."""


class UnknownDtypeError(AigcLabError, ValueError):
    """A dtype name that aigc-lab does not know (it lists the ones it does)."""


class DeviceError(AigcLabError, ValueError):
    """A device that is not available here (``device="cuda"`` without a GPU) or is not a device name."""


class QuantizationError(AigcLabError, ValueError):
    """The scheme is unknown, cannot run on this model's device or dtype, or its library failed to import."""


class TrainConfigError(AigcLabError, ValueError):
    """Fine-tuning parameters are out of range, unknown, or inconsistent with the model or data."""


class TrainingMemoryError(ModelTooLargeError):
    """Fine-tuning with these settings would exceed the memory this machine (or GPU) has free."""


class RunNotFinishedError(AigcLabError, RuntimeError):
    """A result of a run (its trained model) was asked for before the run ended: ``.wait()`` first."""


class DistributedRunError(AigcLabError, RuntimeError):
    """A multi-process run ended without a result from rank 0; the message names the first process that failed."""


class BenchmarkError(AigcLabError, ValueError):
    """A comparison or quality measure was asked for with inputs it cannot use (no models, seq2seq perplexity...)."""


class UserInputError(AigcLabError, ValueError):
    """A Studio control holds a value the action cannot use; the message is shown inline as-is."""


class PruneError(AigcLabError, ValueError):
    """A model or setting ``al.prune`` cannot use (architecture, quantized or adapter model, impossible ratio or
    block choice); checked before any work, the message says what it can do instead."""
