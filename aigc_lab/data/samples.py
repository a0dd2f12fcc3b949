"""Sample corpora that exist on every machine with Python, so nothing needs a download."""

from __future__ import annotations


def python_docs() -> list[str]:
    """English prose from CPython's bundled documentation topics (``pydoc_data.topics``), one text per topic.

    About 80 texts, 460k characters: enough to train a small tokenizer and a tiny language model.
    """
    from pydoc_data.topics import topics

    return [topics[name].strip() for name in sorted(topics)]
