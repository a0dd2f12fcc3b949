"""``%aigc`` / ``%%aigc``: the whole workflow from a notebook line.

Subcommands: model, data, finetune, quantize, generate, chat, compare, export, runs, stop. ``%aigc --help`` and
``%aigc <subcommand> --help`` print argparse help. ``{var}`` in a line or cell interpolates from the
user namespace (IPython's own expansion). ``-o name`` stores a result in the namespace. A bad
argument prints a short usage error (IPython ``UsageError``), never a traceback. The last model
loaded, quantized or fine-tuned is "current" and used when ``--model`` is not given.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display

from .. import runs as run_registry
from ..bus import recorder
from ..errors import AigcLabError


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` (a short message in the notebook) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message)
        raise _HelpShown


class _HelpShown(Exception):
    """--help was printed; nothing else to do."""


def build_parser() -> argparse.ArgumentParser:
    """The ``%aigc`` command line (one sub-parser per workflow step)."""
    p = _Parser(prog="%aigc", description="aigc-lab from a notebook line: data, models, fine-tuning, "
                "quantization and streaming generation.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    m = sub.add_parser("model", help="load a model (hub id, local folder, starter:*) or list the catalog")
    m.add_argument("name", nargs="?", help="model to load, e.g. starter:gpt-tiny, gpt2, ./my-model")
    m.add_argument("--list", action="store_true", help="show the catalog (sizes, memory, fits here?)")
    m.add_argument("--dtype", help="float32, bfloat16, float16")
    m.add_argument("--device", default="auto", help="auto (default: CUDA when available, else CPU), cpu, cuda")
    m.add_argument("-o", "--out", help="store the model handle in this variable")

    d = sub.add_parser("data", help="load a dataset file and optionally clean and split it")
    d.add_argument("path", help="csv, tsv, json, jsonl, txt or parquet file")
    d.add_argument("--text", help="text column (causal LM)")
    d.add_argument("--input", help="input column (pairs)")
    d.add_argument("--target", help="target column (pairs)")
    d.add_argument("--clean", action="store_true", help="normalise and remove duplicates")
    d.add_argument("--split", type=float, metavar="FRACTION", help="hold out this fraction for validation")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("-o", "--out", help="store the dataset (or splits) in this variable")

    f = sub.add_parser("finetune", help="fine-tune the current model on a dataset, in the background")
    f.add_argument("data", help="variable holding a dataset, splits or list of texts")
    f.add_argument("--model", help="variable holding a model handle (default: current model)")
    f.add_argument("--method", default="lora", choices=["full", "lora", "distill"])
    f.add_argument("--max-steps", type=int, default=100)
    f.add_argument("--lr", type=float)
    f.add_argument("--wait", action="store_true", help="block until training ends")
    f.add_argument("-o", "--out", help="store the TrainRun in this variable")

    q = sub.add_parser("quantize", help="quantized copy of the current model")
    q.add_argument("scheme", choices=["int8", "bf16", "fp16", "int8-weight", "int4-weight", "float8"])
    q.add_argument("--model", help="variable holding a model handle (default: current model)")
    q.add_argument("-o", "--out", help="store the quantized handle in this variable")

    g = sub.add_parser("generate", help="stream a generation into the output (%%%%aigc generate: cell = prompt)")
    g.add_argument("prompt", nargs="*", help="the prompt (line form)")
    g.add_argument("--model", help="variable holding a model handle (default: current model)")
    g.add_argument("-n", "--max-new-tokens", type=int, default=64)
    g.add_argument("-t", "--temperature", type=float, default=0.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--logprobs", type=int, metavar="K",
                   help="record each token's probability and its K most likely alternatives (the panel's inspector)")
    g.add_argument("-o", "--out", help="store the TokenStream in this variable")

    ch = sub.add_parser("chat", help="%%%%aigc chat: the cell is your message; streams the reply, keeps the history")
    ch.add_argument("message", nargs="*", help="the message (line form)")
    ch.add_argument("--model", help="variable holding a model handle (default: current model)")
    ch.add_argument("--system", help="system message (starts a new conversation)")
    ch.add_argument("--new", action="store_true", help="start a new conversation with this model")
    ch.add_argument("--template", help="chat template for a model without one: chatml, llama-3, alpaca, plain")
    ch.add_argument("-n", "--max-new-tokens", type=int, default=64)
    ch.add_argument("-t", "--temperature", type=float, default=0.0)
    ch.add_argument("--seed", type=int)
    ch.add_argument("-o", "--out", help="store the Conversation in this variable")

    c = sub.add_parser("compare", help="same prompts through several models: speed and quality")
    c.add_argument("models", nargs="+", help="variables holding model handles")
    c.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    c.add_argument("-n", "--max-new-tokens", type=int, default=32)
    c.add_argument("-o", "--out", help="store the comparison table in this variable")

    e = sub.add_parser("export", help="write the current model for llama.cpp / Ollama (gguf), vLLM / TGI (hf) or "
                       "as a LoRA adapter; prints the command that serves it")
    e.add_argument("target", choices=["gguf", "hf", "adapter"])
    e.add_argument("path", help="a .gguf file (gguf) or a folder (hf, adapter)")
    e.add_argument("--model", help="variable holding a model handle or TrainRun (default: current model; "
                   "adapter needs the LoRA TrainRun)")
    e.add_argument("--quant", default="f16", help="gguf: f32, f16, bf16, q8_0, q4_0 (q4_k_m... with llama.cpp)")
    e.add_argument("--dtype", help="hf: float32, float16, bfloat16 (default: the model's)")
    e.add_argument("--system", help="gguf: the Ollama Modelfile's system prompt")
    e.add_argument("--name", help="gguf: the Ollama model name (default: from the file name)")
    e.add_argument("-o", "--out", help="store the ExportResult in this variable")

    r = sub.add_parser("runs", help="the runs recorded in this kernel")
    r.add_argument("-o", "--out", help="store the table in this variable")

    s = sub.add_parser("stop", help="cancel a running generation or training (all running ones by default)")
    s.add_argument("run", nargs="?", help="run id (see %%aigc runs)")
    return p


@magics_class
class AigcMagics(Magics):
    """The ``%aigc`` line/cell magic."""

    current_model: Any = None
    conversations: dict[int, Any] = {}  # id(model handle) -> its Conversation (%%aigc chat)

    @line_cell_magic
    def aigc(self, line: str, cell: str | None = None) -> Any:
        """Run an aigc-lab command; ``%aigc --help`` lists them."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%aigc: {exc}") from None
        try:
            args = build_parser().parse_args(argv)
        except _HelpShown:
            return None
        if args.command is None:
            raise UsageError("%aigc: give a command; %aigc --help lists them")
        if cell is not None and args.command not in ("generate", "chat"):
            raise UsageError("%%aigc (cell form) is for 'generate' and 'chat': the cell body is the prompt")
        try:
            return getattr(self, f"_do_{args.command}")(args, cell)
        except AigcLabError as exc:  # a user error: one line that says what to do
            raise UsageError(f"%aigc {args.command}: {exc}") from None

    # -- helpers -------------------------------------------------------------------------
    def _var(self, name: str) -> Any:
        ns = self.shell.user_ns
        if name not in ns:
            raise UsageError(f"%aigc: no variable named {name!r} in the notebook")
        return ns[name]

    def _model(self, name: str | None) -> Any:
        if name:
            return self._var(name)
        if self.current_model is None:
            raise UsageError("%aigc: no current model; load one first: %aigc model starter:gpt-tiny -o m")
        return self.current_model

    def _store(self, name: str | None, value: Any) -> None:
        if name:
            self.shell.user_ns[name] = value

    # -- subcommands ---------------------------------------------------------------------
    def _do_model(self, args: argparse.Namespace, _cell: str | None) -> Any:
        import aigc_lab as al

        if args.list:
            table = al.models.catalog(device=args.device)
            self._store(args.out, table)
            return table
        if not args.name:
            raise UsageError("%aigc model: give a model name, or --list for the catalog")
        handle = al.models.load(args.name, dtype=args.dtype, device=args.device)
        self.current_model = handle
        self._store(args.out, handle)
        print(handle)
        return None

    def _do_data(self, args: argparse.Namespace, _cell: str | None) -> Any:
        import aigc_lab as al

        ds = al.data.load(args.path, text=args.text, input=args.input, target=args.target)
        if args.clean:
            ds = ds.clean()
        result = ds.split(val=args.split, test=0.0, seed=args.seed) if args.split else ds
        self._store(args.out, result)
        print(f"{len(ds)} rows from {args.path}" + (f", split {args.split:g} for validation" if args.split else ""))
        display(ds.df.head())
        return None

    def _do_finetune(self, args: argparse.Namespace, _cell: str | None) -> Any:
        import aigc_lab as al

        finetune = getattr(al, "finetune", None)
        if finetune is None:
            raise UsageError("%aigc finetune: fine-tuning is not available in this version of aigc-lab")
        hp = {"max_steps": args.max_steps}
        if args.lr is not None:
            hp["lr"] = args.lr
        run = finetune(self._model(args.model), self._var(args.data), method=args.method, **hp)
        self._store(args.out, run)
        if args.wait:
            run.wait()
            self.current_model = run.model
        print(f"training run {run.run} started ({args.method}); %aigc stop {run.run} cancels it")
        return None

    def _do_quantize(self, args: argparse.Namespace, _cell: str | None) -> Any:
        import aigc_lab as al

        q = al.quantize(self._model(args.model), args.scheme)
        self.current_model = q
        self._store(args.out, q)
        print(q)
        return None

    def _do_generate(self, args: argparse.Namespace, cell: str | None) -> Any:
        import aigc_lab as al

        prompt = cell.strip("\n") if cell is not None else " ".join(args.prompt)
        if not prompt:
            raise UsageError("%aigc generate: give a prompt (or use %%aigc generate with the prompt as the cell)")
        stream = al.generate(self._model(args.model), prompt, max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                             stop=tuple(args.stop), logprobs=args.logprobs)
        self._print_stream(stream)  # streams into the cell output as tokens come
        self._store(args.out, stream)
        return None

    def _do_chat(self, args: argparse.Namespace, cell: str | None) -> Any:
        import aigc_lab as al

        message = cell.strip("\n") if cell is not None else " ".join(args.message)
        if not message.strip():
            raise UsageError("%aigc chat: give a message (or use %%aigc chat with the message as the cell)")
        handle = self._model(args.model)
        conv = self.conversations.get(id(handle))
        if conv is None or conv.model is not handle or args.new or args.system is not None:
            conv = al.Conversation(handle, system=args.system, chat_template=args.template)
            self.conversations[id(handle)] = conv
        stream = conv.say(message, max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
        self._store(args.out, conv)
        self._print_stream(stream)
        return None

    def _print_stream(self, stream: Any) -> None:
        """Print tokens as they come, then one line of metrics."""
        for token in stream:
            print(token.text, end="", flush=True)
        m = stream.metrics
        ttft = f"{m.ttft_ms:.1f} ms" if m.ttft_ms is not None else "-"
        rate = f"{m.tok_s:.1f} tok/s" if m.tok_s is not None else "-"
        print(f"\n[{stream.status}: {m.tokens} tokens, TTFT {ttft}, {rate}]")

    def _do_export(self, args: argparse.Namespace, _cell: str | None) -> Any:
        import aigc_lab as al

        options: dict[str, Any] = {}
        if args.target == "gguf":
            options = {"quant": args.quant, "system": args.system, "ollama_name": args.name}
        elif args.target == "hf":
            options = {"dtype": args.dtype}
        result = al.export(self._model(args.model), args.target, args.path, **options)
        self._store(args.out, result)
        print(result)
        return None

    def _do_compare(self, args: argparse.Namespace, _cell: str | None) -> Any:
        import aigc_lab as al

        table = al.compare([self._var(n) for n in args.models], prompts=args.prompt,
                           max_new_tokens=args.max_new_tokens)
        self._store(args.out, table)
        return table

    def _do_runs(self, args: argparse.Namespace, _cell: str | None) -> Any:
        import pandas as pd

        rows = []
        for run_id, rec in list(recorder.runs.items()):
            start, end = rec.start, rec.end
            rows.append({"run": run_id, "kind": start.kind if start else "?",
                         "model": start.model.name if start else "?", "status": rec.status,
                         "tokens": len(rec.tokens), "ttft_ms": end.metrics.ttft_ms if end else None,
                         "tok_s": end.metrics.tok_s if end else None,
                         "final_loss": rec.steps[-1].loss if rec.steps else None})
        table = pd.DataFrame(rows, columns=["run", "kind", "model", "status", "tokens", "ttft_ms", "tok_s",
                                            "final_loss"])
        self._store(args.out, table)
        return table

    def _do_stop(self, args: argparse.Namespace, _cell: str | None) -> Any:
        targets = [args.run] if args.run else run_registry.live()
        if not targets:
            print("nothing is running")
            return None
        for run_id in targets:
            if not run_registry.cancel(run_id):
                raise UsageError(f"%aigc stop: run {run_id!r} is not running (see %aigc runs)")
            print(f"cancelling {run_id}")
        return None


def register(shell: Any) -> None:
    """Register the ``%aigc`` magics on ``shell`` (idempotent)."""
    shell.register_magics(AigcMagics)
