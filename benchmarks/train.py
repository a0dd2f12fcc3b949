"""Fine-tuning engine: throughput vs Hugging Face ``Trainer``, LoRA memory, telemetry cost. Prints one JSON object.

Model: GPT-2 shape, 6 layers x 512 wide, 8 heads, vocab 16384, random init (seeded). Data: the bundled
Python docs packed into 128-token blocks; batch 8 x 128 tokens; AdamW, lr 5e-5, linear schedule, grad
clipping 1.0, weight decay 0.01 (no decay on biases/norms) in both engines.

- ``engine_vs_hf_trainer_tok_s``: our tokens/s over ``transformers.Trainer`` (its default optimizer for this
  torch, ``adamw_torch_fused`` since torch 2.8; ours is fused AdamW too) on the same model, data, schedule
  and batch. Each run's rate is the median over its steps of the time from one step's end to the next
  one's (so start-up is excluded on both sides, everything between steps is included, and one slow
  step does not decide a run). Goal >= 1.0. Both compute the same function; ours does less work for it:
  the output layer and cross-entropy fused (``aigc_lab/train/fused_loss.py``) and GPT-2's six-op GELU
  as one op (``aigc_lab/models/fused_ops.py``).
- ``lora_vs_full_peak_rss``: peak RSS (``getrusage`` maxrss) of a LoRA run over a full run, each in a fresh
  subprocess that builds the model and trains ``--rss-steps`` steps. Goal <= 0.9.
- ``telemetry_overhead``: our tokens/s with every event sunk to a live comm sink (``CommBridge`` whose send
  JSON-encodes each message) over tokens/s with no sinks (an empty ``EventBus``). Goal >= 0.98.

Variants run interleaved, ``--rounds`` rounds of ``--steps`` steps each after one warm-up round; a ratio is
the median over rounds of the two variants' rates in the same round (paired: the machine's speed drifts
between rounds; ``ratios_of_medians`` gives the unpaired figure too). Defaults are sized for a 2-core CPU,
where one step takes seconds; raise them on a GPU.
``--ablation`` adds the engine without its fused loss and GELU (``ablation.fused_vs_unfused``).
Usage: python benchmarks/train.py [--rounds 3] [--steps 4] [--warmup-steps 2] [--rss-steps 4] [--ablation]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB, LAYERS, WIDTH, HEADS, SEQ, BATCH, LR = 16384, 6, 512, 8, 128, 8, 5e-5


def tokenizer(cache: Path | None = None):
    """The benchmark tokenizer: trained on the Python docs, padded with extra tokens to exactly 16384."""
    from transformers import AutoTokenizer

    if cache is not None and (cache / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(cache)
    import aigc_lab as al
    from aigc_lab.models import train_tokenizer

    tok = train_tokenizer(al.data.samples.python_docs(), vocab_size=VOCAB)
    if len(tok) < VOCAB:
        tok.add_tokens([f"<extra_{i}>" for i in range(VOCAB - len(tok))])
    assert len(tok) == VOCAB, len(tok)
    if cache is not None:
        tok.save_pretrained(cache)
    return tok


def model_handle(tok, seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from aigc_lab.models import ModelHandle

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS, n_positions=SEQ,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    return ModelHandle(GPT2LMHeadModel(cfg), tok, f"gpt2-{LAYERS}x{WIDTH}", "causal")


def texts() -> list[str]:
    import aigc_lab as al

    return al.data.samples.python_docs()


def hparams(steps: int, **extra) -> dict:
    return dict(max_steps=steps, batch_size=BATCH, max_length=SEQ, lr=LR, schedule="linear", warmup_ratio=0.0,
                weight_decay=0.01, max_grad_norm=1.0, seed=0, progress=False, save_final=False, packing=True,
                **extra)


def window_tok_s(elapsed: list[float], tokens_per_step: int) -> float:
    """Tokens/s of one run: over the median step-end to step-end interval (the first step is not timed)."""
    gaps = [b - a for a, b in zip(elapsed, elapsed[1:], strict=False)]
    return tokens_per_step / statistics.median(gaps)


# -- the variants ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _unfused():
    """The engine without its fused ops (``--ablation``): the model's own loss and GELU instead."""
    from aigc_lab.train import loop

    keep = loop.fuse_activations
    loop.fuse_activations = lambda model: 0
    try:
        yield {"fused_loss": False}
    finally:
        loop.fuse_activations = keep


def run_engine(handle, data, steps: int, out: Path, telemetry: bool, fused: bool = True) -> float:
    from aigc_lab.bus import EventBus
    from aigc_lab.train import finetune

    bus, bridge = EventBus(), None
    if telemetry:
        from aigc_lab.jupyter.comm_bridge import CommBridge

        bridge = CommBridge(lambda msg: json.dumps(msg), event_bus=bus)
    try:
        with contextlib.nullcontext({}) if fused else _unfused() as extra:
            run = finetune(handle, data, background=False, event_bus=bus, output_dir=out, **hparams(steps, **extra))
    finally:
        if bridge is not None:
            bridge.close()
    steps_done = run._loop.progress.steps
    return window_tok_s([s["elapsed_s"] for s in steps_done], BATCH * SEQ)


class _Blocks:
    """The same packed 128-token blocks our engine trains on, as a map-style dataset for ``Trainer``."""

    def __init__(self, tok, data) -> None:
        from aigc_lab.train.collate import encode

        self.enc = encode(data, tok, "causal", max_length=SEQ, max_target_length=64, packing=True)

    def __len__(self) -> int:
        return len(self.enc)

    def __getitem__(self, i: int) -> dict:
        import torch

        ids = torch.tensor(self.enc.input_ids[i])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def run_hf(handle, blocks: _Blocks, steps: int, out: Path) -> float:
    import copy

    from transformers import Trainer, TrainerCallback, TrainingArguments

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ARG002
            ends.append(time.perf_counter())

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=BATCH, max_steps=steps,
                             learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.01,
                             max_grad_norm=1.0, seed=0, report_to="none",
                             save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
                             dataloader_num_workers=0, use_cpu=not _cuda())
    model = copy.deepcopy(handle.model)
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its metrics dict: keep stdout one JSON object
        Trainer(model=model, args=args, train_dataset=blocks, callbacks=[Clock()]).train()
    return window_tok_s(ends, BATCH * SEQ)


def hf_optim() -> str:
    """The optimizer ``Trainer`` uses by default with this torch (what ``run_hf`` gets)."""
    from transformers import TrainingArguments

    optim = TrainingArguments(output_dir=tempfile.gettempdir(), report_to="none").optim  # creates nothing
    return str(getattr(optim, "value", optim))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def sink_cost_us(n: int = 2000) -> float:
    """What publishing one ``train.step`` costs with the live comm sink attached (JSON-encoded send)."""
    from aigc_lab.bus import EventBus
    from aigc_lab.events import TrainStep
    from aigc_lab.jupyter.comm_bridge import CommBridge

    bus = EventBus()
    bridge = CommBridge(lambda msg: json.dumps(msg), event_bus=bus)
    t = time.perf_counter()
    for i in range(n):
        bus.publish(TrainStep(run="b", step=i, loss=1.0, lr=5e-5, tok_s=1000.0, epoch=0.1, eta_s=10.0))
    cost = (time.perf_counter() - t) / n * 1e6
    bridge.close()
    return cost


# -- peak RSS, each method in a fresh process ----------------------------------------------------


def rss_child(method: str, steps: int, tok_dir: Path, out: Path) -> None:
    from aigc_lab.bus import EventBus
    from aigc_lab.train import finetune

    tok = tokenizer(tok_dir)
    handle = model_handle(tok)
    finetune(handle, texts(), method, background=False, event_bus=EventBus(), output_dir=out,
             **hparams(steps))
    print(json.dumps({"method": method, "peak_rss_mb": peak_rss_self_mb()}))


def peak_rss_self_mb() -> float:
    """This process's peak RSS. ``VmHWM`` where there is /proc: ``getrusage`` maxrss of an exec'd child also
    counts the RSS its parent had when it forked (Linux keeps the pre-exec high-water mark)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_rss(method: str, steps: int, tok_dir: Path, out: Path) -> float:
    cmd = [sys.executable, __file__, "--rss-child", method, "--rss-steps", str(steps), "--tok-dir", str(tok_dir),
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"])


# -- main --------------------------------------------------------------------------------------------


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="per variant and round (the first is not timed)")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--rss-steps", type=int, default=4)
    parser.add_argument("--ablation", action="store_true",
                        help="also run the engine without its fused loss and GELU (ratio fused_vs_unfused)")
    parser.add_argument("--rss-child", choices=("full", "lora"))
    parser.add_argument("--tok-dir")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_steps, Path(args.tok_dir), Path(args.out))
        return

    import torch
    import transformers

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="aigc-bench-train-"))
    tok = tokenizer(work / "tok")
    full_rss = peak_rss("full", args.rss_steps, work / "tok", work / "rss-full")  # first: fresh processes
    lora_rss = peak_rss("lora", args.rss_steps, work / "tok", work / "rss-lora")
    handle, data = model_handle(tok), texts()
    blocks = _Blocks(tok, data)
    # "engine" sits between the two variants it is compared with, so each ratio's pair runs back to back
    variants = {
        "hf_trainer": lambda i, n: run_hf(handle, blocks, n, work / f"h{i}"),
        "engine": lambda i, n: run_engine(handle, data, n, work / f"e{i}", telemetry=False),
        "engine_telemetry": lambda i, n: run_engine(handle, data, n, work / f"t{i}", telemetry=True),
    }
    if args.ablation:
        variants = {"engine_unfused": lambda i, n: run_engine(handle, data, n, work / f"u{i}", telemetry=False,
                                                              fused=False), **variants}
    for name, fn in variants.items():  # warm-up round (allocator, kernels, lazy imports), not counted
        fn(f"w-{name}", max(2, args.warmup_steps))
    results: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))  # interleaved, alternating order
        for name in order:
            results[name].append(variants[name](f"{r}-{name}", args.steps))
    med = {k: statistics.median(v) for k, v in results.items()}

    def paired(a: str, b: str) -> float:
        """Median over rounds of a/b measured back to back in the same round (the machine's speed drifts by
        +-10% over minutes; a round's two runs share its state, the medians of separate runs do not)."""
        return round(statistics.median(x / y for x, y in zip(results[a], results[b], strict=True)), 3)

    sink_us = sink_cost_us()
    details = {"fused_vs_unfused": paired("engine", "engine_unfused")} if args.ablation else {}
    out = {
        "benchmark": "train",
        "ratios": {
            "engine_vs_hf_trainer_tok_s": paired("engine", "hf_trainer"),
            "lora_vs_full_peak_rss": round(lora_rss / full_rss, 3),
            "telemetry_overhead": paired("engine_telemetry", "engine"),
        },
        "ratios_of_medians": {"engine_vs_hf_trainer_tok_s": round(med["engine"] / med["hf_trainer"], 3),
                              "telemetry_overhead": round(med["engine_telemetry"] / med["engine"], 3)},
        "goals": {"engine_vs_hf_trainer_tok_s": ">= 1.0", "lora_vs_full_peak_rss": "<= 0.9",
                  "telemetry_overhead": ">= 0.98"},
        **({"ablation": details} if details else {}),
        "tok_s": {k: spread(v) for k, v in results.items()},
        "tok_s_per_round": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "comm_sink_us_per_train_step_event": round(sink_us, 1),
        "comm_sink_share_of_a_step": sink_us * 1e-6 / (BATCH * SEQ / med["engine"]),
        "peak_rss_mb": {"full": round(full_rss, 1), "lora": round(lora_rss, 1), "steps": args.rss_steps},
        "setup": {"model": f"gpt2 {LAYERS}x{WIDTH}, {HEADS} heads, vocab {VOCAB}, random init",
                  "params": handle.params, "batch": BATCH, "seq": SEQ, "blocks": len(blocks), "rounds": args.rounds,
                  "steps_per_round": args.steps, "timed": "end of step 1 to end of last step",
                  "optimizer": "AdamW lr 5e-5 linear, wd 0.01, clip 1.0",
                  "hf_optim": hf_optim(),
                  "lora": "defaults: r 8, alpha 16, dropout 0, c_attn/c_proj/c_fc; frozen base shared, not copied"},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "cuda_available": torch.cuda.is_available(),
                    "loadavg": [round(x, 2) for x in os.getloadavg()]},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
