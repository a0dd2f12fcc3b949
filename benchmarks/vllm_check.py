"""vLLM serves our merged export and decodes like our engine: a check for a GPU machine, never a test dependency.

A ``starter:llama-tiny`` (or ``--starter``) is fully fine-tuned for ``--steps`` steps on a few of the bundled
Python docs (learned by heart, so its greedy output is real text), then LoRA-tuned for half as many;
``al.export(run, "hf", dtype=...)`` writes the merged folder; then vLLM (``vllm.LLM``, the engine behind ``vllm
serve``) loads that folder as it is and decodes each prompt greedily. Checked, per prompt:
vLLM's tokenizer gives our tokenizer's ids, and vLLM's greedy ids equal our engine's on the in-memory LoRA model
(``ignore_eos`` on both sides, so both produce ``--tokens`` tokens). Then one chat turn through the folder's own
template, with each side's default stops: vLLM (which reads the eos list from ``generation_config.json``) must end
the reply on the same token as ``al.chat``.

Prints ONE JSON object; exits 0 when every prompt matched, 1 when one did not, 2 when vLLM is not importable (the
export and our reference still run, and are printed, so the rest of the path is checked anywhere).

    python benchmarks/vllm_check.py [--tokens 32] [--dtype float32] [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

N_PROMPTS = 4  # each the first words of one of the docs it learned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starter", default="starter:llama-tiny")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    ap.add_argument("--out", default=None, help="where to write the merged folder (default: a temp folder)")
    args = ap.parse_args()

    import aigc_lab as al
    from aigc_lab.bench.quality import greedy_agreement
    from aigc_lab.bus import EventBus
    from aigc_lab.data.samples import python_docs
    from aigc_lab.infer.params import GenerationParams, stop_ids

    # a few docs, one line each, repeated: a short run learns them by heart, so greedy output is real text whose
    # every token is a clear choice (a check of two engines, not of the model)
    docs = [" ".join(t.split())[:300] for t in python_docs()[:12]]
    corpus = docs * 20
    base = al.models.build_starter(args.starter, corpus)
    hp = dict(batch_size=8, max_length=64, background=False, progress=False, save_final=False, event_bus=EventBus())
    trained = al.finetune(base, corpus, "full", max_steps=args.steps, lr=3e-3, **hp).model  # not degenerate
    run = al.finetune(trained, corpus, "lora", max_steps=max(1, args.steps // 2), lr=5e-3, **hp)
    folder = Path(args.out or tempfile.mkdtemp(prefix="aigc-vllm-")) / "merged"
    exported = al.export(run.model, "hf", folder, dtype=args.dtype)
    tok = run.model.tokenizer
    prompts = [" ".join(d.split()[:4]) for d in docs[:N_PROMPTS]]
    ours = {p: al.generate(run.model, p, max_new_tokens=args.tokens, temperature=0, ignore_eos=True,
                           event_bus=EventBus()).wait().ids for p in prompts}
    report: dict = {"starter": args.starter, "full_steps": args.steps, "lora_steps": max(1, args.steps // 2),
                    "dtype": args.dtype, "folder": str(folder), "serve_command": exported.command,
                    "our_stop_ids": sorted(stop_ids(run.model, GenerationParams())),
                    "ours": {p: tok.decode(ids) for p, ids in ours.items()}}
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        report["vllm"] = None
        report["error"] = f"vLLM is not importable here ({exc}); run this on a machine with vLLM and a GPU"
        print(json.dumps(report, indent=1, ensure_ascii=False))
        sys.exit(2)

    import vllm

    llm = LLM(model=str(folder), dtype=args.dtype, enforce_eager=True, gpu_memory_utilization=0.3, seed=0)
    theirs_tok = llm.get_tokenizer()
    params = SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True)
    prompt_ids = {p: tok(p)["input_ids"] for p in prompts}
    outputs = llm.generate([{"prompt_token_ids": prompt_ids[p]} for p in prompts], params)
    per_prompt = {}
    for p, out in zip(prompts, outputs, strict=True):
        theirs = list(out.outputs[0].token_ids)
        per_prompt[p] = {"tokenizer_same": theirs_tok(p)["input_ids"] == prompt_ids[p],
                         "greedy_same": theirs == ours[p], "agreement": greedy_agreement(ours[p], theirs),
                         "vllm_text": tok.decode(theirs)}
    messages = [{"role": "user", "content": "What does the for statement do?"}]
    chat_ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    ours_chat = al.chat(run.model, messages, max_new_tokens=64, temperature=0, event_bus=EventBus()).wait().ids
    theirs_chat = list(llm.generate([{"prompt_token_ids": list(chat_ids)}],
                                    SamplingParams(temperature=0.0, max_tokens=64))[0].outputs[0].token_ids)
    stops = stop_ids(run.model, GenerationParams())

    def reply(ids: list[int]) -> tuple[list[int], bool]:  # (the reply without its stop token, whether one ended it)
        return (ids[:-1], True) if ids and ids[-1] in stops else (ids, False)

    chat = {"ours": ours_chat, "vllm": theirs_chat, "same": reply(ours_chat) == reply(theirs_chat),
            "ended_on_a_stop_id": reply(ours_chat)[1]}
    report.update(vllm=vllm.__version__, prompts=per_prompt, chat_turn=chat,
                  all_same=chat["same"] and all(v["greedy_same"] and v["tokenizer_same"] for v in per_prompt.values()))
    print(json.dumps(report, indent=1, ensure_ascii=False))
    sys.exit(0 if report["all_same"] else 1)


if __name__ == "__main__":
    main()
