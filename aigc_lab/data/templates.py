"""Templates that turn rows into training text: plain (causal LM), instruction (Alpaca-style), seq2seq pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DataError
from .dataset import AUGMENTED

if TYPE_CHECKING:
    from .dataset import Dataset

KINDS = ("plain", "instruction", "seq2seq")
RESPONSE = "### Response:\n"


def instruction_prompt(instruction: str, input: str = "") -> str:
    """The Alpaca-style prompt up to (and including) ``### Response:``; the Input section only when non-empty."""
    parts = [f"### Instruction:\n{instruction.strip()}"]
    if input.strip():
        parts.append(f"### Input:\n{input.strip()}")
    parts.append(RESPONSE)
    return "\n\n".join(parts)


def _instruction_and_input(ds: Dataset, instruction: str | None) -> tuple[list[str], list[str]]:
    df, roles = ds._df, ds.roles
    inputs = df[roles["input"]].tolist() if "input" in roles else [""] * len(df)
    if instruction is not None:
        return [instruction] * len(df), (inputs if "input" in roles else df[roles["text"]].tolist())
    if "instruction" in roles:
        return df[roles["instruction"]].tolist(), inputs
    return inputs, [""] * len(df)  # the input is the instruction


def render(ds: Dataset, kind: str = "plain", *, instruction: str | None = None,
           eos: str = "") -> list[str] | list[tuple[str, str]]:
    """Rows as training text.

    ``plain``: the text column as is (pairs: input, newline, target). ``instruction``: Alpaca format
    with the target as response; the instruction comes from the ``instruction`` column, else the
    ``instruction=`` string (then the input goes in the Input section), else the input itself.
    ``seq2seq``: ``(input, target)`` tuples. ``eos`` is appended to every text (and target).
    """
    if kind not in KINDS:
        raise DataError(f"unknown template {kind!r}; choose one of {', '.join(KINDS)}")
    if ds.kind == "chat":
        raise DataError("conversations are rendered by a chat template (al.data.chat_templates.render with the "
                        "model's tokenizer); al.finetune takes the conversation dataset as it is")
    roles, df = ds.roles, ds._df
    if kind == "plain":
        if "text" in roles:
            out: list = [t + eos for t in df[roles["text"]]]
        else:
            prompts = df[ds.prompt_column()].tolist()
            if "instruction" in roles and "input" in roles:
                prompts = [f"{i}\n{x}" if x.strip() else i for i, x in zip(prompts, df[roles["input"]], strict=True)]
            out = [f"{p}\n{t}{eos}" for p, t in zip(prompts, df[roles["target"]], strict=True)]
    elif kind == "instruction":
        if "target" not in roles:
            raise DataError("the instruction template needs a target (response) column: load with input=/target= "
                            "(or instruction=/target=)")
        ins, inp = _instruction_and_input(ds, instruction)
        out = [instruction_prompt(i, x) + t.strip() + eos
               for i, x, t in zip(ins, inp, df[roles["target"]], strict=True)]
    else:
        if "target" not in roles:
            raise DataError("seq2seq needs input/target pairs: load with input=... and target=...")
        out = [(p, t + eos) for p, t in zip(df[ds.prompt_column()], df[roles["target"]], strict=True)]
    ds._emit("template", len(ds), len(out), 0, kind=kind)
    return out


def prompts(ds: Dataset, n: int = 8, *, template: str | None = None, include_augmented: bool = False) -> list[str]:
    """The first ``n`` prompts, original rows first (augmented rows only when asked and needed)."""
    df = ds._df
    order = list(df.index[~df[AUGMENTED]])
    if include_augmented:
        order += list(df.index[df[AUGMENTED]])
    rows = df.loc[order[:n]]
    if ds.kind == "chat":  # each conversation up to (without) its last assistant turn: what al.chat continues
        convs = [list(c) for c in rows[ds.roles["messages"]]]
        return [c[:max(i for i, t in enumerate(c) if t["role"] == "assistant")] for c in convs]
    if template is None:
        return rows[ds.prompt_column()].tolist()
    if template != "instruction":
        raise DataError(f"prompts(template=...) supports 'instruction' only, not {template!r}")
    sub = ds._derive(rows)
    ins, inp = _instruction_and_input(sub, None)
    return [instruction_prompt(i, x) for i, x in zip(ins, inp, strict=True)]
