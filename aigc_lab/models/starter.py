"""``starter:<arch>-<size>`` models: real LMs built locally, needing nothing from outside.

Architectures: ``gpt`` (GPT-2 blocks), ``llama`` (Llama blocks: RMSNorm, rotary, SwiGLU), ``t5`` (an
encoder-decoder, for seq2seq tasks) and ``lstm`` (the RNN baseline, ``lstm.py``). Sizes: ``tiny`` about 5M
parameters, ``small`` about 30M, ``base`` about 120M (the exact count depends on the vocabulary, which is
sized from the corpus).

The tokenizer is a byte-level BPE trained with ``tokenizers`` on the given corpus (by default the
bundled Python documentation text), wrapped as a ``PreTrainedTokenizerFast`` so it behaves like any
hub tokenizer; the model is a ``transformers`` architecture sized by name, with seeded random weights.
Both save and load back through ``save_pretrained`` / ``from_pretrained``, the same path as hub models.
Decoder-only starters are chat models too: their tokenizer has ChatML's ``<|im_start|>`` / ``<|im_end|>`` as
special tokens and ChatML as its ``chat_template``, and generation stops at ``<|im_end|>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import ModelLoadError, ModelNotFoundError

EOS = "<|endoftext|>"
PAD = "<pad>"

# size -> (layers, hidden, heads, vocabulary cap) for the transformer starters (gpt, llama)
STARTER_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (4, 256, 4, 8192),
    "small": (6, 512, 8, 16384),
    "base": (12, 768, 12, 32768),
}
# t5: the same widths with half the layers on each side (a decoder layer has cross-attention too)
T5_LAYERS: dict[str, int] = {"tiny": 2, "small": 3, "base": 6}
# lstm: size -> (layers, hidden); an LSTM layer has about 8 * hidden**2 parameters
LSTM_SIZES: dict[str, tuple[int, int]] = {"tiny": (3, 384), "small": (3, 1024), "base": (6, 1536)}
STARTER_ARCHS: tuple[str, ...] = ("gpt", "llama", "t5", "lstm")
STARTER_KINDS: dict[str, str] = {"gpt": "causal", "llama": "causal", "t5": "seq2seq", "lstm": "rnn"}
_NAME = re.compile(r"^starter:(?P<arch>[a-z0-9]+)-(?P<size>[a-z]+)$")


def starter_names() -> list[str]:
    """Every ``starter:<arch>-<size>`` name."""
    return [f"starter:{a}-{s}" for a in STARTER_ARCHS for s in STARTER_SIZES]


def parse_starter_name(name: str) -> tuple[str, str]:
    """Split ``starter:gpt-tiny`` into ``("gpt", "tiny")``, or raise a ``ModelNotFoundError`` with the options."""
    m = _NAME.match(name)
    if not m or m["arch"] not in STARTER_ARCHS or m["size"] not in STARTER_SIZES:
        raise ModelNotFoundError(f"unknown starter model {name!r}; choose one of: {', '.join(starter_names())}")
    return m["arch"], m["size"]


def _vocab_size_for(corpus: Sequence[str], cap: int) -> int:
    """Vocabulary sized to the corpus: about half its distinct words, between 512 and ``cap``, a multiple of 64."""
    words = {w for text in corpus for w in text.split()}
    size = max(512, min(cap, len(words) // 2))
    return (size + 63) // 64 * 64


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 8192, *, seq2seq: bool = False):
    """Train a byte-level BPE tokenizer on ``corpus`` and wrap it as a Hugging Face fast tokenizer.

    Causal models use one special token, ``<|endoftext|>`` (id 0), as bos/eos/pad. With ``seq2seq=True`` the
    tokenizer follows T5: ``<pad>`` is id 0 (also the decoder start token), ``<|endoftext|>`` id 1, and every
    encoded text ends with the end token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, EOS] if seq2seq else [EOS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if seq2seq:
        eos_id = tok.token_to_id(EOS)
        tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}",
                                                           special_tokens=[(EOS, eos_id)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, unk_token=EOS, pad_token=PAD,
                                       model_max_length=512)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=EOS, model_max_length=1024)


def starter_config(name: str, vocab_size: int | None = None, *, pad: int = 0, eos: int = 0) -> Any:
    """The ``transformers`` config of a starter model (``vocab_size`` defaults to the size's cap, an upper bound)."""
    arch, size = parse_starter_name(name)
    layers, hidden, heads, vocab_cap = STARTER_SIZES[size]
    vocab = vocab_size or vocab_cap
    if arch == "gpt":
        from transformers import GPT2Config

        return GPT2Config(vocab_size=vocab, n_positions=1024, n_embd=hidden, n_layer=layers, n_head=heads,
                          bos_token_id=eos, eos_token_id=eos)
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 64 * 64,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                           max_position_embeddings=1024, tie_word_embeddings=True,
                           bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    if arch == "t5":
        from transformers import T5Config

        return T5Config(vocab_size=vocab, d_model=hidden, d_kv=hidden // heads, d_ff=4 * hidden,
                        num_layers=T5_LAYERS[size], num_heads=heads, feed_forward_proj="relu",
                        tie_word_embeddings=True, pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad)
    from .lstm import LSTMConfig

    lstm_layers, lstm_hidden = LSTM_SIZES[size]
    return LSTMConfig(vocab_size=vocab, hidden_size=lstm_hidden, num_hidden_layers=lstm_layers,
                      bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)


def build_starter(name: str, corpus: Sequence[str] | None = None, *, seed: int = 0,
                  **config_overrides: Any):  # -> ModelHandle
    """Build the starter model ``name`` with a tokenizer trained on ``corpus`` (default: Python docs).

    ``config_overrides`` sets fields of the architecture's config, e.g. ``n_layer=2, n_embd=64`` for a smaller GPT
    (tutorials that must train in seconds); an unknown field raises ``ModelLoadError``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from ..data.chat_templates import add_markers, stop_at_end_of_turn
    from ..data.samples import python_docs
    from .handle import ModelHandle

    arch, size = parse_starter_name(name)
    texts = list(corpus) if corpus is not None else python_docs()
    seq2seq = arch == "t5"
    tokenizer = train_tokenizer(texts, _vocab_size_for(texts, STARTER_SIZES[size][3]), seq2seq=seq2seq)
    if not seq2seq:  # a chat model offline: ChatML with real <|im_start|>/<|im_end|> tokens
        add_markers(tokenizer, "chatml")
    config = starter_config(name, len(tokenizer), pad=tokenizer.pad_token_id, eos=tokenizer.eos_token_id)
    unknown = sorted(k for k in config_overrides if not hasattr(config, k))
    if unknown:
        raise ModelLoadError(f"{name} has no config field(s) {', '.join(unknown)}: pass fields of "
                             f"transformers' {type(config).__name__}")
    config.update(dict(config_overrides))
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = auto.from_config(config)
    if not seq2seq:
        stop_at_end_of_turn(model, tokenizer)  # generation_config.eos_token_id: [<|endoftext|>, <|im_end|>]
    model.eval()
    return ModelHandle(model=model, tokenizer=tokenizer, name=name, kind=STARTER_KINDS[arch])
