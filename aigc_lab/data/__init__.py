"""Data preparation: loading, cleaning, templating and the bundled offline sample corpora."""

from . import samples

__all__ = ["samples"]
