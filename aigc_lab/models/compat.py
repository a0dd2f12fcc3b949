"""What transformers renamed between releases we support: the one module that knows.

transformers 5.24 renamed the KV cache, as a ``forward`` keyword and as a model-output field, from
``past_key_values`` to ``cache``; the old name still works but warns on every call (the warning lands in
notebook outputs) and goes in 5.40. The name is read off the installed library (the output dataclass's
fields), not off its version string, so a backport or a dev build is judged by what it has.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers.modeling_outputs import CausalLMOutputWithPast

#: the keyword (and output field) that carries the KV cache in the installed transformers
CACHE: str = "cache" if any(f.name == "cache" for f in dataclasses.fields(CausalLMOutputWithPast)) \
    else "past_key_values"


def cache_kwargs(cache: Any) -> dict[str, Any]:
    """``{CACHE: cache}``: pass the KV cache to a model's ``forward`` under the installed library's name."""
    return {CACHE: cache}


def cache_of(output: Any) -> Any:
    """The KV cache a model returned, read under the installed library's name (no deprecation warning)."""
    return getattr(output, CACHE)
