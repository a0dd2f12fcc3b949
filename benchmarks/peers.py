"""Our engine against llama.cpp on the same exported model: decode tokens/s and time to first token.

Each shape (random-weight GPT-2-small, 124M, "small"; GPT-2 4x256 with an 8k vocabulary, "tiny"; both built
by ``decode.py``) is exported with ``al.export(..., "gguf")`` at every precision llama.cpp reads, and decoded
greedily, batch 1, from the same 64-token prompt for the same number of new tokens, on 2 threads, by:
  ours:  fp32, int8 (dynamic int8, ``al.quantize``), bf16       -- ``al.generate`` as a user calls it
  llama.cpp (llama-cpp-python):  f32, f16, bf16, q8_0, q4_0     -- ``Llama.eval`` + argmax of its logits
Variants are interleaved round by round, so drift in machine load hits all alike. llama.cpp runs in a worker
process (its thread pool and torch's would otherwise spin against each other in one process), called in turn,
so only one side works at a time. Ratios pair each round's
figures and take the median: ``<ours>_vs_llamacpp_<theirs>_<shape>`` is our decode tok/s over theirs (higher
is better) and ``ttft_<ours>_vs_llamacpp_<theirs>_<shape>`` our time to first token over theirs (lower is
better), for the precisions both support (fp32/f32, int8/q8_0, bf16/bf16). llama.cpp's other precisions are
reported in ``shapes`` for reference. Our TTFT is the engine's own metric (prompt tokenized inside); theirs
is timed from the prompt's ids to the first token's id.

Usage: python benchmarks/peers.py [--rounds 3] [--new-tokens 128] [--only tiny|small] [--no-bf16]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from decode import PROMPT_TOKENS, build, prompt_for, summary  # noqa: E402

import aigc_lab as al  # noqa: E402

THREADS = 2
PAIRS = (("fp32", "f32"), ("int8", "q8_0"), ("bf16", "bf16"))
LLAMA_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0")


def ours(handle, prompt: str, n: int) -> dict:
    m = al.generate(handle, prompt, max_new_tokens=n, ignore_eos=True).wait().metrics
    assert m.tokens == n, m
    return {"tok_s": m.tok_s, "ttft_ms": m.ttft_ms}


def llama_cpp_runner(path: Path):
    """A llama.cpp model on THREADS threads and a function decoding ``n`` greedy tokens from a prompt's ids."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=512, n_batch=512, n_threads=THREADS, n_threads_batch=THREADS,
                verbose=False)
    vocab = llm.n_vocab()

    def last_argmax() -> int:
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))))

    def run(ids: list[int], n: int) -> dict:
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        tok = last_argmax()
        t1 = time.perf_counter()
        for _ in range(n - 1):
            llm.eval([tok])
            tok = last_argmax()
        t2 = time.perf_counter()
        return {"tok_s": (n - 1) / (t2 - t1), "ttft_ms": (t1 - t0) * 1000}

    return llm, run


def _llama_cpp_worker(conn, paths: dict[str, str]) -> None:
    """The llama.cpp side, in a process of its own: its thread pool and torch's never share one process, where
    each would spin against the other's idle workers. Answers ``(quant, prompt)`` with the prompt's ids and
    ``(quant, ids, n)`` with one decode's figures; ``None`` ends it."""
    loaded = {q: llama_cpp_runner(Path(p)) for q, p in paths.items()}
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        if len(msg) == 2:
            quant, prompt = msg
            conn.send(loaded[quant][0].tokenize(prompt.encode(), add_bos=True))
        else:
            quant, ids, n = msg
            conn.send(loaded[quant][1](ids, n))


class LlamaCpp:
    """The worker process holding one llama.cpp model per exported GGUF."""

    def __init__(self, paths: dict[str, Path]) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_llama_cpp_worker, args=(child, {q: str(p) for q, p in paths.items()}),
                                 daemon=True)
        self._proc.start()
        assert self._conn.recv() == "ready"

    def tokenize(self, quant: str, prompt: str) -> list[int]:
        self._conn.send((quant, prompt))
        return self._conn.recv()

    def run(self, quant: str, ids: list[int], n: int) -> dict:
        self._conn.send((quant, ids, n))
        return self._conn.recv()

    def close(self) -> None:
        self._conn.send(None)
        self._proc.join(timeout=30)


def run_shape(shape: str, rounds: int, n: int, bf16: bool, folder: Path) -> tuple[dict, dict]:
    handle = build(shape)
    prompt = prompt_for(handle)
    ids = handle.tokenizer(prompt)["input_ids"]
    variants = {"fp32": lambda: ours(handle, prompt, n)}
    int8 = al.quantize(handle, "int8")
    variants["int8"] = lambda: ours(int8, prompt, n)
    if bf16:
        half = al.quantize(handle, "bf16")
        variants["bf16"] = lambda: ours(half, prompt, n)
    paths = {quant: al.export(handle, "gguf", folder / shape / quant / "model.gguf", quant=quant, modelfile=False,
                              progress=False).path
             for quant in LLAMA_QUANTS if bf16 or quant != "bf16"}
    peer = LlamaCpp(paths)
    try:
        for quant in paths:
            assert peer.tokenize(quant, prompt) == ids, "llama.cpp tokenizes the prompt differently"
            variants[f"llamacpp_{quant}"] = lambda quant=quant: peer.run(quant, ids, n)
        for fn in variants.values():  # warm-up
            fn()
        results: dict[str, list[dict]] = {k: [] for k in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                results[name].append(fn())
    finally:
        peer.close()
    out = {name: {"tok_s": summary([r["tok_s"] for r in rs]), "ttft_ms": summary([r["ttft_ms"] for r in rs])}
           for name, rs in results.items()}

    def paired(a: str, b: str, key: str) -> float:
        return round(statistics.median(x[key] / y[key] for x, y in zip(results[a], results[b], strict=True)), 3)

    ratios = {}
    for mine, theirs in PAIRS:
        if mine in results and f"llamacpp_{theirs}" in results:
            ratios[f"{mine}_vs_llamacpp_{theirs}_{shape}"] = paired(mine, f"llamacpp_{theirs}", "tok_s")
            ratios[f"ttft_{mine}_vs_llamacpp_{theirs}_{shape}"] = paired(mine, f"llamacpp_{theirs}", "ttft_ms")
    out["params"] = sum(p.numel() for p in handle.model.parameters())
    return out, ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--only", choices=["tiny", "small"])
    ap.add_argument("--no-bf16", action="store_true", help="skip bf16 (torch's bf16 decode is slow on most CPUs)")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    torch.set_grad_enabled(False)
    import llama_cpp

    from aigc_lab.infer import kernel_build

    report: dict = {"machine": {"threads": THREADS, "torch": torch.__version__, "python": platform.python_version(),
                                "llama_cpp_python": llama_cpp.__version__},
                    "prompt_tokens": PROMPT_TOKENS, "new_tokens": args.new_tokens, "rounds": args.rounds,
                    "engine_cpu_kernel_built": kernel_build.built(),
                    "shapes": {}, "ratios": {}}
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        for shape in ("small", "tiny"):
            if args.only and shape != args.only:
                continue
            details, ratios = run_shape(shape, args.rounds, args.new_tokens, not args.no_bf16, Path(tmp))
            report["shapes"][shape] = details
            report["ratios"].update(ratios)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
