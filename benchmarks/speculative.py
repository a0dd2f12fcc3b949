"""Speculative decoding's speed-up on a real target/draft pair, measured side by side in one run.

A target (``--target``, default the ``starter:gpt-small`` shape) is trained on a corpus (the bundled Python docs)
for ``--steps`` steps; a draft (the same architecture with ``--draft-layers`` layers of width ``--draft-width``, on
the same tokenizer) is then distilled from it on the same corpus for ``--draft-steps`` steps (``al.finetune(...,
"distill", teacher=target)``, the documented way to make a draft: it learns the target's own next-token
distribution), so the draft's acceptance is real, not that of random weights. The trained pair is cached under
``~/.cache/aigc_lab/bench`` (``--retrain`` to train again). ``--on-policy N`` distils the draft on N continuations
the target writes itself as well (sequence-level distillation: the contexts a greedy verification meets), and
``--draft-int8`` also runs the draft quantized to dynamic int8 (a quarter of the bytes per draft step).

Then, interleaved over ``--rounds`` rounds (medians reported), greedy decoding of ``--tokens`` tokens on the
engine's default (kernel) path: the target alone, the target with the draft at k = 2, 4, 8 and "auto", and
prompt lookup (``draft="prompt"``) on a summarisation-like prompt (a passage, then a request to restate it),
where the output copies spans of the prompt. Every speculative output is checked to equal the target's own.

Prints ONE JSON object: tok/s of each variant, acceptance and tokens per target forward, ``verification`` (what
one target forward over n tokens costs against one step), and ``ratios`` (speculative over plain, same prompt,
measured in the same run).

    .venv/bin/python benchmarks/speculative.py [--steps 300] [--draft-steps 300] [--tokens 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

PROMPTS = {
    "story": "The interpreter reads the source file, compiles it to bytecode and then",
    "summary": ("A list is a mutable sequence: items can be appended, inserted, removed and sorted in place. "
                "A tuple is an immutable sequence: once created, its items cannot be changed, which makes it "
                "hashable when its items are. Both support indexing, slicing and iteration.\n"
                "In short: a list is a mutable sequence and a tuple is an immutable sequence; both support"),
}


def _cache_dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """Where the trained target and draft are kept: the draft's key includes the target's, so a new draft recipe
    reuses a trained target."""
    target_key = [args.target, args.steps, args.rows, args.lr, "one-line"]
    if args.precision != "fp32":  # older caches keep their key
        target_key.append(args.precision)
    draft_key = [*target_key, args.draft_layers, args.draft_width, "distilled", args.draft_steps]
    if args.draft_from == "prune":  # older caches keep their key
        draft_key = [*target_key, "pruned", args.draft_layers, args.draft_mlp_ratio, "distilled", args.draft_steps]
    if args.on_policy:
        draft_key += ["on-policy", args.on_policy, on_policy_penalty(args)]
    if args.draft_method != "distill":  # older caches keep their key
        draft_key.append(args.draft_method)
    root = Path(os.environ.get("AIGC_LAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "aigc_lab"))

    def key(parts: list) -> str:
        return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:10]

    return (root / "bench" / f"speculative-target-{key(target_key)}",
            root / "bench" / f"speculative-draft-{key(draft_key)}")


def trained_pair(args: argparse.Namespace) -> tuple:
    """(target, draft, from cache): the target trained on the rows, the draft distilled from it on the same rows
    (same tokenizer), and with ``--on-policy`` on the target's own continuations too; each from the cache when
    there."""
    import aigc_lab as al
    from aigc_lab.bus import EventBus
    from aigc_lab.data.samples import python_docs

    target_dir, draft_dir = _cache_dirs(args)
    cached = [d.exists() and not args.retrain for d in (target_dir, draft_dir)]
    # one line each: with the docs' blank lines kept, a short run's greedy text falls into "\n" repeats, which any
    # draft guesses (acceptance near 1, but not a real one)
    corpus = [" ".join(t.split()) for t in python_docs()[: args.rows]]
    hp = dict(lr=args.lr, batch_size=8, max_length=128, background=False, event_bus=EventBus(),
              precision=args.precision)
    if cached[0]:
        target = al.models.load(str(target_dir))
    else:
        target = al.finetune(al.models.build_starter(args.target, corpus), corpus, "full", max_steps=args.steps,
                             **hp).model
        target.save(target_dir)
    if cached[1]:
        return target, al.models.load(str(draft_dir)), all(cached)
    if args.draft_from == "prune":  # the target's own most important blocks, narrower MLPs (al.prune's surgery)
        from aigc_lab.models.prune import prune_model

        draft = prune_model(target, corpus, drop_blocks=target.model.config.num_hidden_layers - args.draft_layers,
                            mlp_ratio=args.draft_mlp_ratio)
    else:
        draft = al.models.build_starter(args.target, corpus, n_layer=args.draft_layers, n_embd=args.draft_width,
                                        n_head=max(1, args.draft_width // 64))
    assert draft.tokenizer.get_vocab() == target.tokenizer.get_vocab()
    rows = corpus
    if args.on_policy:  # half the rows the target's own text
        own = on_policy_rows(target, corpus, args, target_dir)
        rows = corpus + own * max(1, len(corpus) // len(own))
    if args.draft_method == "sequence":
        # sequence-level distillation alone: next-token loss on the target's own text (and the corpus), no
        # teacher forward per step (for a large target that forward is most of a distillation step)
        draft = al.finetune(draft, rows, "full", max_steps=args.draft_steps, **hp).model
    else:
        # temperature 1 and the KL term alone: the draft matches the target's distribution itself, which is what
        # a greedy verification accepts (its argmax), not a softened one
        draft = al.finetune(draft, rows, "distill", teacher=target, max_steps=args.draft_steps, temperature=1.0,
                            alpha=1.0, **hp).model
    draft.save(draft_dir)
    return target, draft, False


def on_policy_penalty(args: argparse.Namespace) -> float:
    """The repetition penalty of the target's own continuations (default: the benchmark's)."""
    return args.repetition_penalty if args.on_policy_penalty is None else args.on_policy_penalty


def on_policy_rows(target, corpus: list[str], args: argparse.Namespace, target_dir: Path) -> list[str]:
    """``args.on_policy`` texts the target writes itself: eight words from evenly spaced places of the corpus
    rows (none of them a benchmark prompt), then the target's greedy continuation under ``--on-policy-penalty``.
    Distilled on these too, the draft learns the target where its own decoding goes, not only on human text:
    the contexts a greedy verification sees (sequence-level / on-policy distillation)."""
    from tqdm.auto import tqdm

    import aigc_lab as al
    from aigc_lab.bus import EventBus

    cache = target_dir.parent / f"{target_dir.name}-own-{args.on_policy}-{on_policy_penalty(args)}.json"
    if cache.exists() and not args.retrain:  # the target's own text, kept beside it for other draft recipes
        return json.loads(cache.read_text())
    quiet = EventBus()
    docs = [text.split() for text in corpus]
    per_doc = -(-args.on_policy // len(docs))  # prefixes at evenly spaced words of each row
    starts = [(d, len(words) * j // per_doc) for j in range(per_doc) for d, words in enumerate(docs)]
    rows = []
    for d, at in tqdm(starts[: args.on_policy], desc="on-policy continuations"):
        prefix = " ".join(docs[d][at:at + 8])
        stream = al.generate(target, prefix, max_new_tokens=96, repetition_penalty=on_policy_penalty(args),
                             event_bus=quiet).wait()
        rows.append(prefix + stream.text)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    tmp.replace(cache)
    return rows


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def verification_cost(handle, rounds: int = 20) -> dict:
    """What a round's target forward costs: ms of one step against one ``extend`` of n = 3, 5, 9 tokens (k = 2, 4, 8
    guesses plus the pending token) on the target's own stepper, medians of ``rounds`` alternated calls."""
    import torch

    from aigc_lab.infer.backends import plan
    from aigc_lab.infer.stepper import DecodeRequest

    chosen = plan(handle, DecodeRequest(batch=1))
    stepper = chosen.stepper.build(chosen.layers.model, 256)
    ids = handle.tokenizer(PROMPTS["story"], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        stepper.prefill(ids, None)
        token = int(ids[0, -1])
        ms: dict[str, list[float]] = {}
        for _ in range(rounds + 1):  # the first, a warm-up, is dropped
            for n in (1, 3, 5, 9):
                t = time.perf_counter()
                stepper.step([token]) if n == 1 else stepper.extend([token] * n)
                ms.setdefault(f"n{n}", []).append((time.perf_counter() - t) * 1e3)
                stepper.rewind(n)
    med = {k: statistics.median(v[1:]) for k, v in ms.items()}
    return {"stepper": chosen.stepper.name, "step_ms": round(med["n1"], 2),
            **{f"extend_{n}_ms": round(med[f"n{n}"], 2) for n in (3, 5, 9)},
            **{f"extend_{n}_vs_step": round(med[f"n{n}"] / med["n1"], 2) for n in (3, 5, 9)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="starter:gpt-small")
    ap.add_argument("--draft-layers", type=int, default=2)
    ap.add_argument("--draft-width", type=int, default=256)
    ap.add_argument("--draft-from", choices=("scratch", "prune"), default="scratch",
                    help="the draft before distillation: a new model of --draft-layers x --draft-width, or the "
                         "target pruned to its --draft-layers most important blocks with --draft-mlp-ratio of "
                         "each MLP (the tutorial's prune -> distill -> draft)")
    ap.add_argument("--draft-mlp-ratio", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=300, help="the target's training steps")
    ap.add_argument("--draft-steps", type=int, default=300, help="the draft's distillation steps")
    ap.add_argument("--rows", type=int, default=2000, help="corpus rows both models train on")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                    help="training precision of both models (bf16: autocast, about twice as fast on a CPU with "
                         "AVX-512 BF16; the weights stay fp32)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repetition-penalty", type=float, default=1.0,
                    help="greedy decoding with this penalty (still deterministic: the identity check holds); a "
                         "briefly trained target's plain greedy text repeats a short loop, which any draft guesses")
    ap.add_argument("--on-policy", type=int, default=0, metavar="N",
                    help="distil the draft on N continuations the target writes itself (greedy, the benchmark's "
                         "repetition penalty) as well as on the corpus: half its rows")
    ap.add_argument("--on-policy-penalty", type=float, default=None,
                    help="the repetition penalty of those continuations (default: --repetition-penalty), so one "
                         "draft can be measured at several penalties")
    ap.add_argument("--draft-method", choices=("distill", "sequence"), default="distill",
                    help="how the draft learns the target: distill (KL to the target's distribution, a teacher "
                         "forward every step) or sequence (next-token loss on the target's own continuations, "
                         "--on-policy, and the corpus: no teacher forward, several times cheaper for a large "
                         "target)")
    ap.add_argument("--draft-int8", action="store_true",
                    help="also run the draft quantized to dynamic int8 (al.quantize): k = 2, 4 and auto")
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()

    import torch

    import aigc_lab as al
    from aigc_lab.bus import EventBus

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    t = time.perf_counter()
    target, draft, cached = trained_pair(args)
    setup_s = time.perf_counter() - t
    quiet = EventBus()

    def gen(prompt: str, **kw):
        return al.generate(target, prompt, max_new_tokens=args.tokens, event_bus=quiet,
                           repetition_penalty=args.repetition_penalty, **kw).wait()

    variants = {"plain": {}, "k2": {"draft": draft, "num_draft_tokens": 2},
                "k4": {"draft": draft, "num_draft_tokens": 4}, "k8": {"draft": draft, "num_draft_tokens": 8},
                "auto": {"draft": draft, "num_draft_tokens": "auto"}}
    summary_names = ["plain", "prompt", "k4"]
    if args.draft_int8:  # the same draft at a quarter of the bytes per step
        small = al.quantize(draft, "int8")
        variants |= {"int8k2": {"draft": small, "num_draft_tokens": 2},
                     "int8k4": {"draft": small, "num_draft_tokens": 4},
                     "int8auto": {"draft": small, "num_draft_tokens": "auto"}}
        summary_names.append("int8k4")
    for kw in ({}, variants["k4"], {"draft": "prompt"}):
        gen(PROMPTS["story"], **kw)  # warm-up: twins, kernels, caches
    times: dict[str, list[float]] = {}
    info: dict[str, dict] = {}
    identical = True
    plan = None
    for _ in range(args.rounds):
        for prompt_name, prompt in PROMPTS.items():
            names = list(variants) if prompt_name == "story" else summary_names
            for name in names:
                kw = {"draft": "prompt"} if name == "prompt" else variants[name]
                seconds, stream = timed(lambda kw=kw, prompt=prompt: gen(prompt, **kw))
                key = f"{prompt_name}_{name}"
                times.setdefault(key, []).append(len(stream.ids) / seconds)
                m = stream.metrics
                info[key] = {"tokens": len(stream.ids), "acceptance": m.draft_acceptance,
                             "tokens_per_target_step": m.tokens_per_step}
                plan = plan or stream.plan.record()
                if name == "plain":
                    info[key]["ids"] = stream.ids
                    info[key]["text_head"] = stream.text[:160]  # what the target writes: acceptance is not that
                    info[key]["distinct_tokens"] = len(set(stream.ids))  # of a degenerate repeat
                elif stream.ids != info[f"{prompt_name}_plain"]["ids"]:
                    identical = False
    verify = verification_cost(target)
    draft_cost = {"fp32": verification_cost(draft)["step_ms"]}
    if args.draft_int8:
        draft_cost["int8"] = verification_cost(small)["step_ms"]
    tok_s = {k: round(statistics.median(v), 1) for k, v in times.items()}
    for v in info.values():
        v.pop("ids", None)
    ratios = {f"{k}_vs_plain": round(tok_s[k] / tok_s[f"{k.split('_')[0]}_plain"], 3)
              for k in tok_s if not k.endswith("_plain")}
    best = max((v for k, v in ratios.items() if k.startswith("story_") and not k.startswith("story_prompt")),
               default=None)
    print(json.dumps({"target": args.target, "target_params": target.params, "draft_params": draft.params,
                      "train_steps": args.steps, "draft_distill_steps": args.draft_steps, "pair_from_cache": cached,
                      "setup_s": round(setup_s, 1), "tokens": args.tokens, "rounds": args.rounds,
                      "repetition_penalty": args.repetition_penalty,
                      "draft_on_policy_rows": args.on_policy, "draft_on_policy_penalty": on_policy_penalty(args),
                      "draft_from": args.draft_from, "draft_method": args.draft_method,
                      "draft_layers": args.draft_layers,
                      "draft_width": args.draft_width if args.draft_from == "scratch" else None,
                      "draft_mlp_ratio": args.draft_mlp_ratio if args.draft_from == "prune" else None,
                      "draft_step_ms": draft_cost,
                      "target_layers": plan and plan["layers"], "target_stepper": plan and plan["stepper"],
                      "greedy_identical": identical, "tok_s": tok_s, "speculation": info, "verification": verify,
                      "ratios": ratios, "best_model_draft_ratio": best}, indent=1))
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
