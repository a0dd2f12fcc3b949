"""Models and text shared by the export tests: briefly trained starters, so greedy outputs are not degenerate."""

from __future__ import annotations

import aigc_lab as al

# English and Chinese text, trained on (the tokenizer learns merges for both) and used to compare tokenizers
ENGLISH = [
    "The for statement is used to iterate over the elements of a sequence, such as a string, tuple or list.",
    "A class definition defines a class object; its suite is executed in a new frame with a new namespace.",
    "The with statement wraps the execution of a block with methods defined by a context manager.",
    "Exceptions are raised by the raise statement and handled by the try statement's except clauses.",
]
CHINESE = [
    "今天天气很好，我们去公园散步吧。",
    "机器学习模型可以在笔记本里训练，然后导出给别的工具使用。",
    "这是一个用于测试中文分词的句子，包含标点符号：逗号、句号！",
]
CORPUS = (ENGLISH + CHINESE) * 6
# not in CORPUS, but made of its phrases: a tiny model trained on CORPUS has a meaningful perplexity on it
HELD_OUT = ("The with statement is used to iterate over the elements of a context manager. A class definition "
            "wraps the execution of a block in a new frame. 我们去公园训练模型，然后导出给别的工具使用。")
PROMPTS = ["The for statement", "A class definition", "Exceptions are", "今天天气"]


def trained_starter(name: str, output_dir, steps: int = 60, method: str = "full"):
    """``name`` (``starter:gpt-tiny`` / ``starter:llama-tiny``) with its tokenizer and a short fine-tune on CORPUS;
    returns the finished ``TrainRun``."""
    handle = al.models.build_starter(name, CORPUS)
    return al.finetune(handle, CORPUS, method=method, max_steps=steps, batch_size=8, max_length=64,
                       lr=3e-3 if method == "full" else 1e-2, background=False, progress=False, save_final=False,
                       output_dir=output_dir)


def engine_greedy(handle, prompt: str, n: int) -> list[int]:
    """Our engine's greedy ids (ignoring eos, so both sides produce ``n`` tokens)."""
    return al.generate(handle, prompt, max_new_tokens=n, temperature=0, ignore_eos=True).wait().ids
