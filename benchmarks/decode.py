"""Decode speed of the streaming engine against HF ``generate``, on random-weight models of named shapes.

Prints one JSON object. Every ratio is measured side by side in one run: the variants are interleaved
round by round (at least 5 rounds), so drift in machine load hits all of them alike; medians are
reported with min-max spreads. Shapes: GPT-2 4x256 with an 8k vocabulary ("tiny") and GPT-2-small
(124M, 50257 vocabulary, "small"); 64-token prompt, 128 new tokens, greedy, batch 1. ``--llama`` adds a
Llama-style shape of about the same size ("llama": 12 x 768, grouped-query attention, 32k vocabulary).

Ratios (goals from issue 4):
  engine_vs_hf_generate_tiny  >= 1.15   engine tok/s over HF generate tok/s (decode), tiny
  engine_vs_hf_generate_small >= 1.0    same, small
  stream_vs_plain_small       >= 0.97   engine streaming through the real comm sink vs HF generate, no streaming
  background_vs_main_small    >= 0.9    engine on a background thread vs the calling thread
  int8_vs_fp32_decode_small   >= 1.8    engine int8 vs fp32 decode tok/s
  int8_ttft_vs_fp32_small     <= 0.6    engine int8 TTFT over fp32 TTFT
  fp32_share_of_roofline_small >= 0.65  decode tok/s over (measured read bandwidth / weight bytes)
  fp32_share_of_matmul_floor_small      decode tok/s over the rate of the step's matrix-vector products
                                         alone, done by torch (what its BLAS allows; see matmul_floor_s)
  compiled_vs_eager_tiny                 the opt-in torch.compile path (compile cost reported as compile_s)
  logprobs_vs_stream_{tiny,small}        generate(logprobs=5) vs off, both streaming through the comm sink
                                         (the token inspector's cost when on; when off it is one test per token)
"The engine" is ``al.generate`` as a user calls it. On the CPU its default decodes single prompts of fp32
and dynamic-int8 models on the engine's C++ kernel once that is built, each GPT-2 / Llama-family token as
one call (``make`` builds it; this script builds it first, reporting kernel_build_s, unless --no-kernel;
the int8 variant is then on the kernel too, otherwise on torch's quantized layers). For transparency every shape also
runs the engine on torch's path (cpu_kernel=False):
  kernel_vs_torch_path_{tiny,small}      engine tok/s, kernel over torch's path
  torch_path_vs_hf_generate_{tiny,small} the engine on torch's path over HF generate
  fp32_share_of_roofline_small_torch_path
Every ratio is the median over rounds of the two variants' figures within the round (paired: the
machine's speed drifts between rounds; ``ratios_of_medians`` in each shape gives unpaired figures too).
The roofline's bandwidth is probed just before and just after each fp32 decode it is compared with
(the machine's read bandwidth flips between ~30 and ~55 GB/s within minutes); the share is the median
of per-round shares, each printed with its bandwidth.

Usage: python benchmarks/decode.py [--rounds 5] [--new-tokens 128] [--only tiny|small|llama] [--llama] [--no-kernel]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import aigc_lab as al
from aigc_lab.bus import EventBus
from aigc_lab.jupyter.comm_bridge import CommBridge
from aigc_lab.models import ModelHandle, train_tokenizer
from aigc_lab.models.quantize import quantize

PROMPT_TOKENS = 64
LOGPROBS = 5


def padded_tokenizer(vocab_size: int):
    """A real byte-level BPE tokenizer, padded with added tokens to exactly ``vocab_size`` ids."""
    tok = train_tokenizer(al.data.samples.python_docs(), vocab_size=min(vocab_size, 8192))
    missing = vocab_size - len(tok)
    if missing > 0:
        tok.add_tokens([f"<x{i}>" for i in range(missing)])
    return tok


def build(shape: str) -> ModelHandle:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if shape == "llama":  # Llama-style, GPT-2-small-sized: 12 x 768, 12 heads over 4 key/value heads, 32k vocab
        tok = padded_tokenizer(32000)
        config = LlamaConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                             num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=1024,
                             bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
        torch.manual_seed(0)
        return ModelHandle(model=LlamaForCausalLM(config).eval(), tokenizer=tok, name="llama-random", kind="causal")
    layers, hidden, heads, vocab = {"tiny": (4, 256, 4, 8192), "small": (12, 768, 12, 50257)}[shape]
    tok = padded_tokenizer(vocab)
    config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, vocab_size=len(tok), n_positions=1024,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    return ModelHandle(model=model, tokenizer=tok, name=f"gpt2-{shape}-random", kind="causal")


def prompt_for(handle: ModelHandle) -> str:
    """A prompt of exactly PROMPT_TOKENS tokens (cut from the docs corpus)."""
    ids = handle.tokenizer(" ".join(al.data.samples.python_docs()[:3]))["input_ids"][:PROMPT_TOKENS]
    text = handle.tokenizer.decode(ids)
    assert len(handle.tokenizer(text)["input_ids"]) >= PROMPT_TOKENS - 2
    return text


def hf_generate(handle: ModelHandle, prompt: str, n: int) -> dict:
    """HF ``generate`` greedy, no streamer; TTFT from a separate 1-token call, decode rate from the rest."""
    ids = handle.tokenizer(prompt, return_tensors="pt")["input_ids"]
    kw = dict(do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=handle.tokenizer.eos_token_id)
    with torch.inference_mode():
        t = time.perf_counter()
        handle.model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
        ttft = time.perf_counter() - t
        t = time.perf_counter()
        handle.model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
        total = time.perf_counter() - t
    return {"tok_s": (n - 1) / max(total - ttft, 1e-9), "ttft_ms": ttft * 1000}


def engine(handle: ModelHandle, prompt: str, n: int, *, bus: EventBus, background: bool = False,
           cpu_kernel: bool | None = None, logprobs: int | None = None) -> dict:
    stream = al.generate(handle, prompt, max_new_tokens=n, ignore_eos=True, event_bus=bus, background=background,
                         cpu_kernel=cpu_kernel, logprobs=logprobs)
    m = stream.wait().metrics
    assert m.tokens == n, m
    return {"tok_s": m.tok_s, "ttft_ms": m.ttft_ms}


def read_bandwidth_gbs() -> float:
    """Memory read bandwidth: median of summing a 512 MB fp32 tensor (far bigger than any cache)."""
    a = torch.ones(128 * 2**20)
    a.sum()
    times = []
    for _ in range(7):
        t = time.perf_counter()
        a.sum()
        times.append(time.perf_counter() - t)
    return a.numel() * 4 / statistics.median(times) / 1e9


def matmul_floor_s(handle: ModelHandle, reps: int = 5) -> float:
    """Seconds one decode step spends in its matrix-vector products alone: every Linear/Conv1D weight of the
    model (and the vocabulary projection) applied to one vector, in model order, nothing else. This is what
    the BLAS lets a batch-1 decode reach; ``fp32_share_of_matmul_floor_small`` compares the engine with it."""
    from transformers.pytorch_utils import Conv1D

    calls = []
    for module in handle.model.modules():
        if isinstance(module, Conv1D):  # GPT-2: x @ W (in, out) + b
            w, b = module.weight, module.bias
            calls.append(lambda w=w, b=b: torch.addmm(b, torch.ones(1, w.shape[0]), w))
        elif isinstance(module, torch.nn.Linear):
            w, b = module.weight, module.bias
            calls.append(lambda w=w, b=b: torch.nn.functional.linear(torch.ones(1, w.shape[1]), w, b))
    times = []
    with torch.inference_mode():
        for _ in range(reps + 1):
            t = time.perf_counter()
            for call in calls:
                call()
            times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def weight_bytes(handle: ModelHandle) -> int:
    return sum(p.numel() * p.element_size() for p in handle.model.parameters())


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def run_shape(shape: str, rounds: int, n: int, compile_tiny: bool, kernel: bool) -> tuple[dict, dict]:
    handle = build(shape)
    prompt = prompt_for(handle)
    plain_bus, comm_bus = EventBus(), EventBus()
    sent = {"messages": 0}

    def send(msg: dict) -> None:  # the real sink, with a send that JSON-encodes like the comm does
        json.dumps(msg)
        sent["messages"] += 1

    bridge = CommBridge(send, event_bus=comm_bus)
    variants = {
        "hf_generate": lambda: hf_generate(handle, prompt, n),
        "engine": lambda: engine(handle, prompt, n, bus=plain_bus),
        "engine_stream": lambda: engine(handle, prompt, n, bus=comm_bus),
    }
    if kernel:
        variants["engine_torch_path"] = lambda: engine(handle, prompt, n, bus=plain_bus, cpu_kernel=False)
    compile_s = None
    if shape == "tiny" and compile_tiny:
        compiled = al.infer.compile_model(handle)
        compile_s = compiled.compile_s
        variants["engine_compiled"] = lambda: engine(compiled, prompt, n, bus=plain_bus)
    if shape in ("tiny", "small"):  # the token inspector's cost: 5 alternatives per token, streamed to the panel
        variants["engine_logprobs"] = lambda: engine(handle, prompt, n, bus=comm_bus, logprobs=LOGPROBS)
    if shape == "small":
        variants["engine_background"] = lambda: engine(handle, prompt, n, bus=plain_bus, background=True)
    if shape in ("small", "llama"):
        int8 = quantize(handle, "int8")
        variants["engine_int8"] = lambda: engine(int8, prompt, n, bus=plain_bus)
    for fn in variants.values():  # warm-up: allocator, kernels, first-call costs
        fn()
    results: dict[str, list[dict]] = {k: [] for k in variants}
    probed = ("engine", "engine_torch_path") if shape == "small" else ()
    for _ in range(rounds):
        for name, fn in variants.items():
            if name in probed:  # the roofline's bandwidth: probed just before and just after this decode
                before = read_bandwidth_gbs()
                result = fn()
                result["bw"] = (before + read_bandwidth_gbs()) / 2
            else:
                result = fn()
            results[name].append(result)
    bridge.close()
    out = {name: {"tok_s": summary([r["tok_s"] for r in rs]), "ttft_ms": summary([r["ttft_ms"] for r in rs])}
           for name, rs in results.items()}
    med = {name: statistics.median(r["tok_s"] for r in rs) for name, rs in results.items()}

    def paired(a: str, b: str, key: str = "tok_s") -> float:
        """Median over rounds of a/b within each round (the machine's speed drifts between rounds)."""
        return statistics.median(x[key] / y[key] for x, y in zip(results[a], results[b], strict=True))

    ratios = {f"engine_vs_hf_generate_{shape}": paired("engine", "hf_generate")}
    if "engine_logprobs" in results:
        ratios[f"logprobs_vs_stream_{shape}"] = paired("engine_logprobs", "engine_stream")
    if "engine_int8" in results:
        ratios[f"int8_vs_fp32_decode_{shape}"] = paired("engine_int8", "engine")
    if compile_s is not None:
        ratios["compiled_vs_eager_tiny"] = paired("engine_compiled", "engine")
        out["compile_s"] = round(compile_s, 1)
    if kernel:
        ratios[f"kernel_vs_torch_path_{shape}"] = paired("engine", "engine_torch_path")
        ratios[f"torch_path_vs_hf_generate_{shape}"] = paired("engine_torch_path", "hf_generate")
    out["ratios_of_medians"] = {k: round(med[a] / med[b], 3) for k, a, b in (
        (f"engine_vs_hf_generate_{shape}", "engine", "hf_generate"),
        ("background_vs_main_small", "engine_background", "engine"),
        (f"int8_vs_fp32_decode_{shape}", "engine_int8", "engine")) if a in med and b in med}
    if shape == "small":
        bandwidths = [r["bw"] for r in results["engine"]]
        bw = statistics.median(bandwidths)
        wb = weight_bytes(handle)
        ceiling = bw * 1e9 / wb
        floor_s = matmul_floor_s(handle)

        def shares(name: str) -> list[float]:
            """Each round's tok/s over (the bandwidth probed around that decode / weight bytes)."""
            return [r["tok_s"] / (r["bw"] * 1e9 / wb) for r in results[name]]

        ratios.update({
            "stream_vs_plain_small": paired("engine_stream", "hf_generate"),
            "background_vs_main_small": paired("engine_background", "engine"),
            "int8_ttft_vs_fp32_small": paired("engine_int8", "engine", "ttft_ms"),
            "fp32_share_of_roofline_small": statistics.median(shares("engine")),
            "fp32_share_of_matmul_floor_small": med["engine"] * floor_s,
            "hf_share_of_matmul_floor_small": med["hf_generate"] * floor_s,
        })
        if kernel:
            ratios["fp32_share_of_roofline_small_torch_path"] = statistics.median(shares("engine_torch_path"))
        out["roofline"] = {"read_bandwidth_gb_s": round(bw, 1),
                           "read_bandwidth_each": [round(b, 1) for b in bandwidths],
                           "engine_tok_s_each": [round(r["tok_s"], 1) for r in results["engine"]],
                           "share_each": [round(x, 3) for x in shares("engine")],
                           "weight_mb": round(wb / 2**20, 1),
                           "ceiling_tok_s": round(ceiling, 1),
                           "matmul_floor_ms_per_token": round(floor_s * 1000, 1),
                           "matmul_ceiling_tok_s": round(1 / floor_s, 1),
                           "gemv_effective_gb_s": round(wb / floor_s / 1e9, 1)}
    out["params"] = sum(p.numel() for p in handle.model.parameters())
    out["comm_messages_for_streamed_runs"] = sent["messages"]
    return out, {k: round(v, 3) for k, v in ratios.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--only", choices=["tiny", "small", "llama"])
    ap.add_argument("--llama", action="store_true", help="add the Llama-style shape (no goal in issue 4; for figures)")
    ap.add_argument("--no-compile", action="store_true", help="skip the opt-in torch.compile variant (~40 s)")
    ap.add_argument("--no-kernel", action="store_true",
                    help="measure the engine on torch's path only (as where no C++ compiler can build the kernel)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    report: dict = {"machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                                "python": platform.python_version(), "cuda": torch.cuda.is_available()},
                    "prompt_tokens": PROMPT_TOKENS, "new_tokens": args.new_tokens, "rounds": args.rounds,
                    "shapes": {}, "ratios": {}}
    kernel = not args.no_kernel and not torch.cuda.is_available()
    if kernel:
        t = time.perf_counter()
        al.infer.build_kernel()
        report["kernel_build_s"] = round(time.perf_counter() - t, 1)
    else:
        import os

        os.environ["AIGC_LAB_CPU_KERNEL"] = "0"
    report["engine_default_path"] = "cpu_kernel" if kernel else "torch"
    for shape in ("tiny", "small", "llama"):
        if (args.only and shape != args.only) or (shape == "llama" and not (args.llama or args.only == "llama")):
            continue
        details, ratios = run_shape(shape, args.rounds, args.new_tokens, not args.no_compile, kernel)
        report["shapes"][shape] = details
        report["ratios"].update(ratios)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
