"""The GPU path, end to end, in one script (under 8 minutes on one GPU): what ran, how fast, how much memory.

Run it when the ``device`` tool lends a GPU; CI never needs one. ``--smoke`` runs the same code on tiny shapes
on whatever device there is (the CPU here), which is how the script itself is checked without a GPU.

* generate: a GPT-2-small-shaped and a Qwen2-shaped ~0.5B random model in fp16 and bf16, and each torchao
  scheme the GPU has (``int8-weight``; ``int4-weight`` on bf16; ``float8`` from compute capability 8.9):
  decode tok/s, TTFT, the share of the HBM roofline (tok/s x weight bytes / measured copy bandwidth), the
  stepper and layers the engine chose, peak memory.
* finetune: full and LoRA, a few hundred steps, on a starter and on the Qwen2-shaped model (bf16 autocast,
  fp32 master weights): train tok/s, peak memory, first and last loss.
* quantize + compare: the int8-weight copy against bf16 in one ``al.compare`` table.
* two processes (``finetune_distributed``) when two GPUs exist.

Prints ONE JSON object. Usage: ``python benchmarks/gpu_check.py [--smoke] [--steps 200] [--tokens 128]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def bandwidth_gbs(device: str) -> float:
    """Device memory bandwidth from a large on-device copy (read + write bytes over time), in GB/s."""
    import torch

    n = (256 if device == "cuda" else 64) * 2**20 // 4
    a = torch.empty(n, dtype=torch.float32, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    sync(device)
    t = time.perf_counter()
    reps = 20
    for _ in range(reps):
        b.copy_(a)
    sync(device)
    return 2 * a.numel() * 4 * reps / (time.perf_counter() - t) / 1e9


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def peak_mb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def qwen2_shaped(smoke: bool) -> Any:
    """A random Qwen2-shaped causal LM (~0.5B: 24 x 896, 14 heads over 2 key/value heads, 151,936 ids)."""
    import torch
    from decode import padded_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import aigc_lab as al

    vocab, hidden, inter, layers, heads, kv = ((4096, 128, 384, 2, 4, 2) if smoke else
                                               (151936, 896, 4864, 24, 14, 2))
    tok = padded_tokenizer(vocab)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    return al.models.ModelHandle(Qwen2ForCausalLM(config).eval(), tok, "qwen2-0.5b-shaped-random", "causal")


def decode_row(handle: Any, device: str, bw: float, tokens: int, **kw: Any) -> dict[str, Any]:
    import aigc_lab as al
    from aigc_lab.bus import EventBus

    prompt = "The interpreter reads the source file, compiles it to bytecode and then"
    quiet = EventBus()
    al.generate(handle, prompt, max_new_tokens=4, ignore_eos=True, event_bus=quiet, **kw).wait()  # warm-up
    reset_peak(device)
    stream = al.generate(handle, prompt, max_new_tokens=tokens, ignore_eos=True, event_bus=quiet, **kw).wait()
    m = stream.metrics
    weight_bytes = sum(p.numel() * p.element_size() for p in handle.model.parameters())
    return {"quant": handle.quant or handle.dtype, "tok_s": m.tok_s, "ttft_ms": m.ttft_ms,
            "roofline_share": (m.tok_s * weight_bytes / (bw * 1e9)) if m.tok_s else None,
            "weight_mb": weight_bytes / 2**20, "peak_mb": peak_mb(device), **stream.plan.record()}


def train_row(handle: Any, device: str, method: str, steps: int) -> dict[str, Any]:
    import aigc_lab as al
    from aigc_lab.bus import EventBus

    reset_peak(device)
    texts = al.data.samples.python_docs()
    t = time.perf_counter()
    run = al.finetune(handle, texts, method, max_steps=steps, batch_size=8, max_length=256, background=False,
                      event_bus=EventBus())
    seconds = time.perf_counter() - t
    losses = run.losses
    rates = [s["tok_s"] for s in run.steps if s.get("tok_s")]
    return {"method": method, "steps": len(losses), "seconds": round(seconds, 1),
            "train_tok_s": sorted(rates)[len(rates) // 2] if rates else None,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "peak_mb": peak_mb(device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on whatever device there is (checks the script)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()

    import torch

    import aigc_lab as al

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print(json.dumps({"error": "no CUDA device: run on a GPU machine, or --smoke to check the script here"}))
        sys.exit(2)
    device = "cuda" if cuda else "cpu"
    steps = 3 if args.smoke else args.steps
    tokens = 16 if args.smoke else args.tokens
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "smoke": args.smoke,
                              "gpus": torch.cuda.device_count() if cuda else 0, "torch": torch.__version__}
    bw = bandwidth_gbs(device)
    report["copy_bandwidth_gbs"] = round(bw, 1)
    capability = torch.cuda.get_device_capability(0) if cuda else None
    t0 = time.perf_counter()

    from decode import build

    models = {"gpt2-small": build("tiny" if args.smoke else "small"), "qwen2-0.5b": qwen2_shaped(args.smoke)}
    generate: dict[str, list[dict[str, Any]]] = {}
    for name, base in models.items():
        rows = []
        base_dev = al.models.ModelHandle(base.model.to(device), base.tokenizer, name, "causal")
        for dtype in ("float16", "bfloat16"):
            half = al.models.ModelHandle(base_dev.model.to(getattr(torch, dtype)), base.tokenizer, name, "causal")
            rows.append(decode_row(half, device, bw, tokens))
        bf16 = al.models.ModelHandle(base_dev.model.to(torch.bfloat16), base.tokenizer, name, "causal")
        schemes = ["int8-weight"] + (["int4-weight"] if cuda else []) + (
            ["float8"] if capability is not None and capability >= (8, 9) else [])
        for scheme in schemes:
            try:
                rows.append(decode_row(al.quantize(bf16, scheme), device, bw, tokens))
            except al.AigcLabError as exc:
                rows.append({"quant": scheme, "error": str(exc)})
        generate[name] = rows
        if name == "qwen2-0.5b":
            try:
                table = al.compare([bf16, al.quantize(bf16, "int8-weight")], ["Once upon a time"],
                                   max_new_tokens=tokens)
                report["compare_int8_weight_vs_bf16"] = table[["model", "quant", "tok_s", "greedy_agreement"]
                                                              ].to_dict("records")
            except al.AigcLabError as exc:
                report["compare_int8_weight_vs_bf16"] = {"error": str(exc)}
    report["generate"] = generate

    train: dict[str, list[dict[str, Any]]] = {}
    starter = al.models.load("starter:gpt-tiny" if args.smoke else "starter:gpt-small", device=device)
    train["starter"] = [train_row(starter, device, m, steps) for m in ("full", "lora")]
    qwen = models["qwen2-0.5b"]
    qwen_dev = al.models.ModelHandle(qwen.model.to(device=device, dtype=torch.bfloat16 if cuda else torch.float32),
                                     qwen.tokenizer, "qwen2-0.5b", "causal")
    train["qwen2-0.5b"] = [train_row(qwen_dev, device, m, max(2, steps // 4)) for m in ("full", "lora")]
    report["train"] = train

    if cuda and torch.cuda.device_count() >= 2:
        from aigc_lab.train import finetune_distributed

        t = time.perf_counter()
        run = finetune_distributed(starter, al.data.samples.python_docs(), "full", num_processes=2,
                                   max_steps=steps, batch_size=8, max_length=256)
        report["distributed_2_gpus"] = {"seconds": round(time.perf_counter() - t, 1), "status": run.status,
                                        "steps": len(run.losses)}
    report["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
