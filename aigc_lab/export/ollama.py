"""An Ollama ``Modelfile`` beside a GGUF: FROM, one ``stop`` parameter per eos token, an optional system prompt.

The chat template travels inside the GGUF (``tokenizer.chat_template``); Ollama reads it from there.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ..errors import ExportError


def modelfile_text(gguf_path: Path, stops: list[str], system: str | None = None) -> str:
    """The Modelfile for ``gguf_path`` (FROM relative to the Modelfile's folder, which is the GGUF's)."""
    lines = [f"FROM ./{gguf_path.name}"]
    for stop in stops:
        if '"' in stop or "\n" in stop:
            raise ExportError(f"the stop token {stop!r} has a quote or a line break, which a Modelfile cannot hold")
        lines.append(f'PARAMETER stop "{stop}"')
    if system:
        if '"""' in system:
            raise ExportError('the system prompt contains """, which ends a Modelfile string: remove it')
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def model_name(gguf_path: Path, name: str | None = None) -> str:
    """An Ollama model name: ``name`` checked, or the GGUF's file name made lower-case and safe."""
    if name is not None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*(:[a-z0-9._-]+)?", name):
            raise ExportError(f"ollama model name {name!r}: use lower-case letters, digits, '.', '_', '-' "
                              "(and an optional ':tag')")
        return name
    return re.sub(r"[^a-z0-9._-]+", "-", gguf_path.stem.lower()).strip("-._") or "model"


def create_command(name: str, modelfile: Path) -> str:
    """The command that imports the model into Ollama."""
    return f"ollama create {name} -f {shlex.quote(str(modelfile))}"
