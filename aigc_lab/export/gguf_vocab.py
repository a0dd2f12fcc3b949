"""A Hugging Face byte-level BPE tokenizer as GGUF vocabulary metadata that llama.cpp reads on its own.

llama.cpp re-implements each tokenizer family; it needs the token strings, their types, the merges, and the
name of a pre-tokenizer it knows (the regex that splits text before BPE). The name is chosen from the
tokenizer's own ``tokenizer.json`` (its split regex), never guessed: a tokenizer whose pre-tokenizer,
normalizer or model llama.cpp would apply differently is refused, so an exported model never tokenizes
differently from the original.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExportError

# The split regexes of the byte-level BPE families llama.cpp implements, as tokenizer.json writes them
# -> (llama.cpp pre-tokenizer name, the tokenizer's `ignore_merges` that llama.cpp assumes for it)
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_REST = r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
KNOWN_SPLITS: dict[str, tuple[str, bool]] = {
    GPT2_REGEX: ("gpt-2", False),
    _CONTRACTIONS + r"\p{N}{1,3}|" + _REST: ("llama-bpe", True),  # Llama 3
    _CONTRACTIONS + r"\p{N}|" + _REST: ("qwen2", False),  # Qwen2 / Qwen2.5 / Qwen3
}

# gguf.TokenType values (kept here so the plan needs no gguf import)
NORMAL, UNUSED, CONTROL, USER_DEFINED = 1, 5, 3, 4


@dataclass
class GgufVocab:
    """Everything the ``tokenizer.*`` GGUF keys hold."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    eos: int
    bos: int | None = None
    unk: int | None = None
    pad: int | None = None
    extra_eog: list[int] = field(default_factory=list)  # written as eot, eom: llama.cpp stops on each
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | dict[str, str] | None = None

    def write(self, writer: Any) -> None:
        """Add the ``tokenizer.ggml.*`` and ``tokenizer.chat_template`` keys to a ``gguf.GGUFWriter``."""
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        writer.add_token_merges(self.merges)
        writer.add_eos_token_id(self.eos)
        for setter, value in ((writer.add_bos_token_id, self.bos), (writer.add_unk_token_id, self.unk),
                              (writer.add_pad_token_id, self.pad)):
            if value is not None:
                setter(value)
        for setter, value in zip((writer.add_eot_token_id, writer.add_eom_token_id), self.extra_eog, strict=False):
            setter(value)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if isinstance(self.chat_template, dict):
            writer.add_chat_template([{"name": k, "template": v} for k, v in self.chat_template.items()])
        elif self.chat_template:
            writer.add_chat_template(self.chat_template)


def _pre_tokenizer(spec: dict[str, Any] | None) -> tuple[str, bool]:
    """The llama.cpp pre-tokenizer name (and its assumed ``ignore_merges``) for a tokenizer.json pre-tokenizer."""
    if spec and spec.get("type") == "ByteLevel" and spec.get("use_regex", True):
        if spec.get("add_prefix_space"):
            raise ExportError("this tokenizer adds a prefix space before byte-level BPE, which llama.cpp's BPE "
                              "tokenizer does not do: save it with add_prefix_space=False to export it")
        return KNOWN_SPLITS[GPT2_REGEX]
    parts = spec.get("pretokenizers", []) if spec and spec.get("type") == "Sequence" else []
    if (len(parts) == 2 and parts[0].get("type") == "Split" and parts[1].get("type") == "ByteLevel"
            and not parts[1].get("use_regex", True) and not parts[1].get("add_prefix_space")
            and parts[0].get("behavior") == "Isolated" and not parts[0].get("invert")):
        regex = (parts[0].get("pattern") or {}).get("Regex")
        if regex in KNOWN_SPLITS:
            return KNOWN_SPLITS[regex]
    raise ExportError(f"llama.cpp has no pre-tokenizer known to match this tokenizer's ({json.dumps(spec)[:200]}); "
                      f"GGUF export supports byte-level BPE tokenizers that split like "
                      f"{', '.join(sorted(n for n, _ in KNOWN_SPLITS.values()))}")


def _check_model(model: dict[str, Any], normalizer: dict[str, Any] | None, decoder: dict[str, Any] | None,
                 ignore_merges: bool) -> None:
    if model.get("type") != "BPE":
        raise ExportError(f"GGUF export supports byte-level BPE tokenizers; this one is {model.get('type')} "
                          "(SentencePiece/WordPiece vocabularies are not exported yet)")
    odd = [k for k in ("continuing_subword_prefix", "end_of_word_suffix", "dropout") if model.get(k)]
    if model.get("byte_fallback"):
        odd.append("byte_fallback")
    if odd:
        raise ExportError(f"this BPE tokenizer uses {', '.join(odd)}, which llama.cpp's BPE does not: not exportable")
    if bool(model.get("ignore_merges", False)) != ignore_merges:
        raise ExportError(f"this tokenizer's ignore_merges={model.get('ignore_merges', False)} differs from what "
                          "llama.cpp assumes for its pre-tokenizer: it would tokenize differently, so it is refused")
    if normalizer is not None and normalizer.get("type") != "NFC":
        raise ExportError(f"this tokenizer normalizes text ({normalizer.get('type')}), which llama.cpp's BPE "
                          "tokenizer does not: not exportable")
    if not decoder or decoder.get("type") != "ByteLevel":
        raise ExportError("GGUF export needs a byte-level decoder (tokenizers.decoders.ByteLevel)")


def _adds_specials(tokenizer: Any) -> tuple[bool, bool]:
    """Whether encoding adds bos / eos (read from the tokenizer's behaviour, not its config)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    extra = len(full) - len(plain)
    add_bos = extra > 0 and bos is not None and full[0] == bos and full[1:1 + len(plain)] == plain
    add_eos = extra > int(add_bos) and eos is not None and full[-1] == eos
    if extra != int(add_bos) + int(add_eos):
        raise ExportError(f"this tokenizer's post-processor adds tokens other than bos/eos ({full} for 'a'): "
                          "llama.cpp could not reproduce it")
    return add_bos, add_eos


def build_vocab(tokenizer: Any, n_vocab: int, eos_ids: list[int], chat_template: Any) -> GgufVocab:
    """The GGUF vocabulary of ``tokenizer`` for a model with ``n_vocab`` embedding rows (padded with unused tokens)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError("GGUF export needs a fast (tokenizers-backed) tokenizer; load it with use_fast=True")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre, ignore_merges = _pre_tokenizer(spec.get("pre_tokenizer"))
    _check_model(spec["model"], spec.get("normalizer"), spec.get("decoder"), ignore_merges)
    id_to_text: dict[int, str] = {i: t for t, i in spec["model"]["vocab"].items()}
    types = {i: NORMAL for i in id_to_text}
    for added in spec.get("added_tokens", []):
        id_to_text[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    too_big = [i for i in id_to_text if i >= n_vocab]
    if too_big:
        raise ExportError(f"the tokenizer has ids up to {max(too_big)} but the model embeds only {n_vocab} tokens: "
                          "resize the embeddings (model.resize_token_embeddings(len(tokenizer))) first")
    if not eos_ids:
        raise ExportError("the model has no eos token (tokenizer.eos_token_id and generation_config.eos_token_id "
                          "are unset): llama.cpp would never stop; set tokenizer.eos_token first")
    if len(eos_ids) > 3:
        raise ExportError(f"{len(eos_ids)} eos ids ({eos_ids}): GGUF carries at most three (eos, eot, eom); keep "
                          "the ones that matter in generation_config.eos_token_id")
    bad = [i for i in eos_ids if i not in id_to_text]
    if bad:
        raise ExportError(f"eos ids {bad} are not in the tokenizer's vocabulary: fix generation_config.eos_token_id")
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    add_bos, add_eos = _adds_specials(tokenizer)
    if isinstance(chat_template, dict) and "default" not in chat_template:
        raise ExportError("named chat templates need one called 'default' (the one llama.cpp and Ollama apply)")
    return GgufVocab(
        tokens=[id_to_text.get(i, f"[PAD{i}]") for i in range(n_vocab)],
        types=[types.get(i, UNUSED) for i in range(n_vocab)],
        merges=merges, pre=pre, eos=eos_ids[0], bos=tokenizer.bos_token_id, unk=tokenizer.unk_token_id,
        pad=tokenizer.pad_token_id, extra_eog=eos_ids[1:], add_bos=add_bos, add_eos=add_eos,
        chat_template=chat_template,
    )
