"""Shared fixtures: tiny starter models built once per session (no network needed)."""

from __future__ import annotations

import pytest

import aigc_lab as al

SMALL_CORPUS = [
    "Once upon a time there was a tiny model that learned to stream tokens.",
    "The quick brown fox jumps over the lazy dog; naïve café déjà vu — ✓ 日本語 テキスト.",
    "Python is a programming language that lets you work quickly and integrate systems.",
] * 20


@pytest.fixture(scope="session")
def gpt_tiny():
    """``starter:gpt-tiny`` with the default corpus (the bundled Python docs)."""
    return al.models.load("starter:gpt-tiny")


@pytest.fixture(scope="session")
def llama_tiny():
    """A Llama-style starter with a tokenizer trained on a small unicode-rich corpus."""
    return al.models.build_starter("starter:llama-tiny", SMALL_CORPUS)


CHAT_CORPUS = ["hello world, how are you today?", "fine thanks, and you?", "the answer is four", "Be brief."] * 20


@pytest.fixture(scope="session")
def base_tok():
    """A small byte-level BPE tokenizer with no chat markers and no chat template (chat tests add what they need,
    on a copy)."""
    return al.models.train_tokenizer(CHAT_CORPUS, 300)
