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
