"""``starter:<arch>-<size>`` models: real transformer LMs built locally, needing nothing from outside.

The tokenizer is a byte-level BPE trained with ``tokenizers`` on the given corpus (by default the
bundled Python documentation text), wrapped as a ``PreTrainedTokenizerFast`` so it behaves like any
hub tokenizer; the model is a ``transformers`` architecture sized by name, with seeded random weights.
Both save and load back through ``save_pretrained`` / ``from_pretrained``, the same path as hub models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..errors import ModelNotFoundError

EOS = "<|endoftext|>"

# size -> (layers, hidden, heads, default vocab); about 5M, 30M and 120M parameters with GPT-2 blocks
STARTER_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (4, 256, 4, 8192),
    "small": (6, 512, 8, 16384),
    "base": (12, 768, 12, 32768),
}
STARTER_ARCHS: tuple[str, ...] = ("gpt", "llama")
_NAME = re.compile(r"^starter:(?P<arch>[a-z0-9]+)-(?P<size>[a-z]+)$")


def parse_starter_name(name: str) -> tuple[str, str]:
    """Split ``starter:gpt-tiny`` into ``("gpt", "tiny")``, or raise a ``ModelNotFoundError`` with the options."""
    m = _NAME.match(name)
    if not m or m["arch"] not in STARTER_ARCHS or m["size"] not in STARTER_SIZES:
        options = ", ".join(f"starter:{a}-{s}" for a in STARTER_ARCHS for s in STARTER_SIZES)
        raise ModelNotFoundError(f"unknown starter model {name!r}; choose one of: {options}")
    return m["arch"], m["size"]


def _vocab_size_for(corpus: Sequence[str], cap: int) -> int:
    """Vocabulary sized to the corpus: about half its distinct words, between 512 and ``cap``, a multiple of 64."""
    words = {w for text in corpus for w in text.split()}
    size = max(512, min(cap, len(words) // 2))
    return (size + 63) // 64 * 64


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 8192):  # -> PreTrainedTokenizerFast
    """Train a byte-level BPE tokenizer on ``corpus`` and wrap it as a Hugging Face fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=EOS, model_max_length=1024)


def build_starter(name: str, corpus: Sequence[str] | None = None, *, seed: int = 0):  # -> ModelHandle
    """Build the starter model ``name`` with a tokenizer trained on ``corpus`` (default: Python docs)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from ..data.samples import python_docs
    from .handle import ModelHandle

    arch, size = parse_starter_name(name)
    layers, hidden, heads, vocab_cap = STARTER_SIZES[size]
    texts = list(corpus) if corpus is not None else python_docs()
    tokenizer = train_tokenizer(texts, _vocab_size_for(texts, vocab_cap))
    vocab = len(tokenizer)
    eos = tokenizer.eos_token_id
    if arch == "gpt":
        config = GPT2Config(vocab_size=vocab, n_positions=1024, n_embd=hidden, n_layer=layers, n_head=heads,
                            bos_token_id=eos, eos_token_id=eos)
        cls = GPT2LMHeadModel
    else:
        config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 64 * 64,
                             num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                             max_position_embeddings=1024, tie_word_embeddings=True,
                             bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
        cls = LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.eval()
    return ModelHandle(model=model, tokenizer=tokenizer, name=name, kind="causal")
