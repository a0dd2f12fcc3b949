"""Log lines a CPU user cannot act on, dropped at their source loggers (and nothing else from those loggers).

transformers imports torchao whenever it is installed (the ``quant`` / ``test`` extras); torchao then logs
"Failed to load ....so" for each CUDA-only library it ships, and torch's pytree logs a deprecation about enums
torchao registers. On a machine without CUDA these say nothing true about the user's work, and they land in
every notebook's output. Any other record of those loggers passes.
"""

from __future__ import annotations

import logging


class _Drop(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not all(f in message for f in self.fragments)


def install() -> None:
    """Attach the filters (idempotent)."""
    for name, fragments in (("torchao", ("Failed to load", ".so")),
                            ("torch.utils._pytree", ("is an Enum subclass", "register_constant"))):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) and f.fragments == fragments for f in logger.filters):
            logger.addFilter(_Drop(*fragments))
