"""Structured pruning: a smaller *dense* model of the same architecture, cut where calibration text shows least effect.

Three cuts, each uniform so every layer keeps one shape and the result is a plain ``transformers`` model that
``save_pretrained`` / ``from_pretrained`` reload with no custom code:

- whole blocks, the least important first; a block's importance is ShortGPT's *block influence*,
  ``1 - cos(input, output)`` of its hidden states averaged over the calibration tokens (a block that barely
  changes its input can go);
- MLP width: the same number of intermediate neurons kept in every block, each block keeping its own most
  important ones (mean ``|activation|`` on calibration tokens times the norm of the neuron's output weights);
- attention heads (Llama family): whole key/value groups with their query heads, so ``num_key_value_heads``
  still divides ``num_attention_heads`` and ``head_dim`` stays; a group's importance is the mean norm of its
  heads' contribution to the attention output. GPT-2's attention width is its hidden size in ``transformers``
  (``head_dim = n_embd / n_head``), so its heads cannot be removed without custom code and are refused.

Every check runs before any work (``PruneError``). The original model is never touched. ``al.prune``
(``bench/pruning.py``) wraps ``prune_model`` with the before/after report.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import PruneError
from .handle import ModelHandle

GPT2_TYPES = ("gpt2",)
# model.layers[i].self_attn.{q,k,v,o}_proj and .mlp.{gate,up,down}_proj
LLAMA_TYPES = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED = GPT2_TYPES + LLAMA_TYPES
DROP_SHARE = 0.25  # drop_blocks=None (and no keep_blocks): this share of the blocks goes, rounded down
MLP_RATIO = 0.5  # default share of every MLP's neurons kept
HEADS_RATIO = 1.0  # default share of every block's key/value groups kept (GPT-2 can only keep all)
CALIBRATION_TOKENS = 16384  # tokens of the user's data read for calibration (64 blocks of SEQ_LEN)
SEQ_LEN = 256  # calibration block length (tokens), capped by the model's positions
BATCH_SIZE = 8  # calibration blocks per forward

__all__ = ["CALIBRATION_TOKENS", "DROP_SHARE", "HEADS_RATIO", "LLAMA_TYPES", "MLP_RATIO", "SUPPORTED", "Importance",
           "PruneError", "PrunePlan", "PrunedModel", "check", "measure_importance", "plan_prune", "prune_model"]


@dataclass(frozen=True)
class Target:
    """The shape asked for, checked against the model: block count or explicit blocks, MLP width, kv groups."""

    arch: str  # "gpt2" | "llama"
    n_blocks: int
    keep_count: int
    keep_blocks: tuple[int, ...] | None  # explicit choice; None = by block influence
    mlp_width: int
    mlp_after: int
    kv_heads: int
    kv_after: int
    heads: int
    head_dim: int


@dataclass
class Importance:
    """What calibration measured on the original model (None where that cut was not asked for)."""

    block_influence: list[float] | None  # per block: mean 1 - cos(input, output)
    neurons: list[Any] | None  # per block: [intermediate] importance
    kv_groups: list[Any] | None  # per block: [num_key_value_heads] importance
    tokens: int = 0


@dataclass(frozen=True)
class PrunePlan:
    """Which blocks stay, and per kept block which MLP neurons and key/value groups: what ``prune_model`` did."""

    arch: str
    n_blocks: int  # before
    kept_blocks: tuple[int, ...]
    block_influence: tuple[float, ...] | None
    mlp: tuple[int, int]  # (before, after) intermediate width
    kv_heads: tuple[int, int]  # (before, after) key/value heads
    heads: tuple[int, int]  # (before, after) attention (query) heads
    calibration_tokens: int
    neurons: tuple[Any, ...] = field(default=(), repr=False)  # per kept block: sorted kept neuron indices
    groups: tuple[Any, ...] = field(default=(), repr=False)  # per kept block: sorted kept kv group indices

    @property
    def dropped_blocks(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.n_blocks) if i not in self.kept_blocks)

    def summary(self) -> str:
        """One line: what was removed."""
        parts = [f"blocks kept {list(self.kept_blocks)}"]
        if self.mlp[0] != self.mlp[1]:
            parts.append(f"MLP width {self.mlp[0]} -> {self.mlp[1]}")
        if self.heads[0] != self.heads[1]:
            parts.append(f"heads {self.heads[0]} -> {self.heads[1]} (kv {self.kv_heads[0]} -> {self.kv_heads[1]})")
        return "; ".join(parts)


@dataclass(repr=False)
class PrunedModel(ModelHandle):
    """A ``ModelHandle`` of the pruned model (use it anywhere a handle goes), with its ``plan`` and, from
    ``al.prune``, the measured before/after ``report``."""

    plan: PrunePlan | None = None
    report: Any = None  # bench.pruning.PruneReport

    def __repr__(self) -> str:
        plan = f"; {self.plan.summary()}" if self.plan else ""
        return super().__repr__()[:-1] + plan + ")"

    def _repr_html_(self) -> str:
        if self.report is not None:
            return self.report._repr_html_()
        import html

        return f"<pre>{html.escape(repr(self))}</pre>"


def _arch(model_type: str) -> str:
    return "gpt2" if model_type in GPT2_TYPES else "llama"


def _count(ratio: float, total: int, what: str) -> int:
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= 1:
        raise PruneError(f"{what} must be a fraction in (0, 1] (1.0 keeps everything), not {ratio!r}")
    return max(1, round(ratio * total))


def check(handle: Any, *, drop_blocks: int | None = None, keep_blocks: Sequence[int] | None = None,
          mlp_ratio: float = MLP_RATIO, heads_ratio: float = HEADS_RATIO,
          calibration_tokens: int = CALIBRATION_TOKENS) -> Target:
    """Everything ``prune_model`` needs to know is possible, checked before any work (``PruneError`` otherwise).
    ``drop_blocks=None`` without ``keep_blocks`` drops ``DROP_SHARE`` of the blocks."""
    if not isinstance(handle, ModelHandle):
        raise PruneError(f"prune takes a ModelHandle (al.models.load(...)), not {type(handle).__name__}")
    if handle.quant:
        raise PruneError(f"{handle.name!r} is quantized ({handle.quant}); prune the full-precision model, then "
                         "quantize the pruned one")
    model = handle.model
    if hasattr(model, "peft_config"):
        raise PruneError("this model carries LoRA adapters; prune the merged model (a finished run's .model is merged)")
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if handle.kind != "causal" or model_type not in SUPPORTED:
        raise PruneError(f"cannot prune a {model_type or type(model).__name__} model ({handle.kind}): structured "
                         f"pruning supports the decoder-only transformers {', '.join(SUPPORTED)} (GPT-2 and the "
                         "Llama family)")
    arch = _arch(model_type)
    if arch == "gpt2":
        n_blocks, heads = config.n_layer, config.n_head
        mlp_width = config.n_inner or 4 * config.n_embd
        kv_heads, head_dim = heads, config.n_embd // heads
    else:
        n_blocks, heads = config.num_hidden_layers, config.num_attention_heads
        mlp_width = config.intermediate_size
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if drop_blocks is not None and keep_blocks is not None:
        raise PruneError("give drop_blocks (how many, chosen by importance) or keep_blocks (which), not both")
    explicit: tuple[int, ...] | None = None
    if keep_blocks is not None:
        explicit = tuple(sorted({int(i) for i in keep_blocks}))
        if not explicit or len(explicit) != len(list(keep_blocks)) or explicit[0] < 0 or explicit[-1] >= n_blocks:
            raise PruneError(f"keep_blocks must be distinct block indices in 0..{n_blocks - 1}, at least one; "
                             f"got {list(keep_blocks)}")
        keep_count = len(explicit)
    else:
        drop = int(n_blocks * DROP_SHARE) if drop_blocks is None else drop_blocks
        if isinstance(drop, bool) or not isinstance(drop, int) or not 0 <= drop < n_blocks:
            raise PruneError(f"drop_blocks must be a whole number from 0 to {n_blocks - 1} (this model has "
                             f"{n_blocks} blocks and keeps at least one), not {drop_blocks!r}")
        keep_count = n_blocks - drop
    if isinstance(calibration_tokens, bool) or not isinstance(calibration_tokens, int) or calibration_tokens < 2:
        raise PruneError(f"calibration_tokens must be a whole number of at least 2, not {calibration_tokens!r}")
    mlp_after = _count(mlp_ratio, mlp_width, "mlp_ratio")
    kv_after = _count(heads_ratio, kv_heads, "heads_ratio")
    if arch == "gpt2":
        if kv_after != kv_heads:
            raise PruneError("GPT-2's attention width is its hidden size in transformers (head_dim = n_embd / n_head), "
                             "so removing heads would need custom model code; prune GPT-2 with drop_blocks and "
                             "mlp_ratio (heads_ratio=1.0), or use a Llama-family model")
        if keep_count != n_blocks and getattr(config, "scale_attn_by_inverse_layer_idx", False):
            raise PruneError("this GPT-2 scales attention by its layer index (scale_attn_by_inverse_layer_idx), so a "
                             "block moved to another index would compute something else; prune only its MLP width")
    return Target(arch=arch, n_blocks=n_blocks, keep_count=keep_count, keep_blocks=explicit, mlp_width=mlp_width,
                  mlp_after=mlp_after, kv_heads=kv_heads, kv_after=kv_after, heads=heads, head_dim=head_dim)


def _blocks(model: Any, arch: str) -> Any:
    return model.transformer.h if arch == "gpt2" else model.model.layers


def _mlp_out(block: Any, arch: str) -> Any:
    return block.mlp.c_proj if arch == "gpt2" else block.mlp.down_proj


def calibration_batches(tokenizer: Any, texts: Sequence[str], *, seq_len: int, max_tokens: int,
                        batch_size: int = BATCH_SIZE) -> list:
    """The first ``max_tokens`` tokens of ``texts`` (joined with the end token), cut into ``seq_len`` blocks
    (no padding), batched."""
    import torch

    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, verbose=False)["input_ids"])
        if eos is not None:
            ids.append(int(eos))
        if len(ids) >= max_tokens:
            break
    ids = ids[:max_tokens]
    rows = [ids[i:i + seq_len] for i in range(0, len(ids) - 1, seq_len)]
    full = [r for r in rows if len(r) == seq_len]
    batches = [torch.tensor(full[i:i + batch_size]) for i in range(0, len(full), batch_size)]
    if len(rows) > len(full) and len(rows[-1]) >= 2:
        batches.append(torch.tensor([rows[-1]]))
    return batches


def measure_importance(handle: ModelHandle, texts: Sequence[str], target: Target, *,
                       calibration_tokens: int = CALIBRATION_TOKENS, seq_len: int = SEQ_LEN,
                       batch_size: int = BATCH_SIZE) -> Importance:
    """One calibration pass over ``texts`` with forward hooks on the original model: block influence (when blocks
    are chosen by importance), MLP neuron and kv-group importance (when those are cut). Nothing is changed."""
    import torch
    import torch.nn.functional as F

    model, arch = handle.model, target.arch
    want_blocks = target.keep_blocks is None and target.keep_count < target.n_blocks
    want_mlp = target.mlp_after < target.mlp_width
    want_heads = target.kv_after < target.kv_heads
    imp = Importance(block_influence=None, neurons=None, kv_groups=None)
    if not (want_blocks or want_mlp or want_heads):
        return imp
    if not texts:
        raise PruneError("calibration needs text: pass the dataset the model will be used on (rows of text)")
    positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    batches = calibration_batches(handle.tokenizer, texts, seq_len=min(seq_len, positions or seq_len),
                                  max_tokens=calibration_tokens, batch_size=batch_size)
    if not batches:
        raise PruneError("the calibration text is shorter than 2 tokens; pass more rows of text")
    blocks = _blocks(model, arch)
    n = len(blocks)
    influence = [0.0] * n
    neurons = [torch.zeros(target.mlp_width, dtype=torch.float64) for _ in range(n)]
    heads = [torch.zeros(target.heads, dtype=torch.float64) for _ in range(n)]
    hooks = []

    def on_block(i: int):
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            influence[i] += float((1.0 - F.cosine_similarity(x.float(), y.float(), dim=-1)).sum())
        return hook

    def on_mlp(i: int):
        def hook(module: Any, args: tuple) -> None:
            neurons[i] += args[0].detach().abs().float().sum(dim=(0, 1)).double().cpu()
        return hook

    def on_attn_out(i: int):
        def hook(module: Any, args: tuple) -> None:
            x = args[0].detach().float()
            w = module.weight.detach().float()  # [hidden, heads * head_dim]
            d = target.head_dim
            for h in range(target.heads):
                out = x[..., h * d:(h + 1) * d] @ w[:, h * d:(h + 1) * d].T
                heads[i][h] += float(out.norm(dim=-1).sum())
        return hook

    try:
        for i, block in enumerate(blocks):
            if want_blocks:
                hooks.append(block.register_forward_hook(on_block(i), with_kwargs=True))
            if want_mlp:
                hooks.append(_mlp_out(block, arch).register_forward_pre_hook(on_mlp(i)))
            if want_heads:
                hooks.append(block.self_attn.o_proj.register_forward_pre_hook(on_attn_out(i)))
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for batch in batches:
                    model(input_ids=batch.to(handle.device), use_cache=False)
                    imp.tokens += batch.numel()
        finally:
            model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    tokens = max(imp.tokens, 1)
    if want_blocks:
        imp.block_influence = [v / tokens for v in influence]
    if want_mlp:
        imp.neurons = [(neurons[i] / tokens) * _neuron_out_norm(_mlp_out(b, arch), arch) for i, b in enumerate(blocks)]
    if want_heads:
        group = target.heads // target.kv_heads
        imp.kv_groups = [(h / tokens).view(target.kv_heads, group).sum(dim=1) for h in heads]
    return imp


def _neuron_out_norm(layer: Any, arch: str) -> Any:
    """Per intermediate neuron, the norm of its output weights (GPT-2's Conv1D stores [in, out]; Linear [out, in])."""
    w = layer.weight.detach().double().cpu()
    return w.norm(dim=1) if arch == "gpt2" else w.norm(dim=0)


def _top(scores: Any, k: int) -> Any:
    """Indices of the ``k`` largest scores, in ascending index order (earlier index wins a tie)."""
    import torch

    order = torch.argsort(-scores, stable=True)[:k]
    return torch.sort(order).values


def plan_prune(target: Target, importance: Importance) -> PrunePlan:
    """Turn measurements into a plan: drop the blocks of least influence, keep each block's top neurons and groups."""
    import torch

    if target.keep_blocks is not None:
        kept = target.keep_blocks
    elif importance.block_influence is not None:
        kept = tuple(sorted(_top(torch.tensor(importance.block_influence), target.keep_count).tolist()))
    else:
        kept = tuple(range(target.n_blocks))
    every_neuron, every_group = torch.arange(target.mlp_width), torch.arange(target.kv_heads)
    neurons = tuple(_top(importance.neurons[i], target.mlp_after) if importance.neurons is not None
                    else every_neuron for i in kept)
    groups = tuple(_top(importance.kv_groups[i], target.kv_after) if importance.kv_groups is not None
                   else every_group for i in kept)
    group = target.heads // target.kv_heads
    influence = tuple(importance.block_influence) if importance.block_influence is not None else None
    return PrunePlan(arch=target.arch, n_blocks=target.n_blocks, kept_blocks=kept, block_influence=influence,
                     mlp=(target.mlp_width, target.mlp_after), kv_heads=(target.kv_heads, target.kv_after),
                     heads=(target.heads, target.kv_after * group), calibration_tokens=importance.tokens,
                     neurons=neurons, groups=groups)


def _pruned_config(config: Any, plan: PrunePlan, head_dim: int) -> Any:
    cfg = copy.deepcopy(config)
    n = len(plan.kept_blocks)
    if plan.arch == "gpt2":
        cfg.n_layer, cfg.n_inner = n, plan.mlp[1]
        return cfg
    cfg.num_hidden_layers, cfg.intermediate_size = n, plan.mlp[1]
    cfg.num_attention_heads, cfg.num_key_value_heads = plan.heads[1], plan.kv_heads[1]
    cfg.head_dim = head_dim  # no longer hidden_size / heads once heads are removed
    layer_types = getattr(cfg, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == plan.n_blocks:
        cfg.layer_types = [layer_types[i] for i in plan.kept_blocks]
    return cfg


def _slice(rest: str, t: Any, plan: PrunePlan, j: int, head_dim: int) -> Any:
    """The part of block parameter ``rest`` (e.g. ``mlp.c_fc.weight``) the plan keeps in kept block ``j``."""
    import torch

    n = plan.neurons[j]
    if plan.arch == "gpt2":
        if rest == "mlp.c_fc.weight":
            return t[:, n]
        if rest in ("mlp.c_fc.bias", "mlp.c_proj.weight"):
            return t[n]
        return t
    if rest.startswith(("mlp.gate_proj.", "mlp.up_proj.")):
        return t[n]
    if rest == "mlp.down_proj.weight":
        return t[:, n]
    group = plan.heads[0] // plan.kv_heads[0]
    kv = plan.groups[j]
    q_heads = (kv[:, None] * group + torch.arange(group)[None, :]).reshape(-1)
    q_rows = (q_heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)
    kv_rows = (kv[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)
    if rest.startswith("self_attn.q_proj."):
        return t[q_rows]
    if rest.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
        return t[kv_rows]
    if rest == "self_attn.o_proj.weight":
        return t[:, q_rows]
    return t


def apply_plan(model: Any, plan: PrunePlan, head_dim: int) -> Any:
    """A new model of the same class, built from the pruned config, holding the kept weights (copies)."""
    import torch

    prefix = "transformer.h" if plan.arch == "gpt2" else "model.layers"
    block_key = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.+)$")
    position = {old: new for new, old in enumerate(plan.kept_blocks)}
    state: dict[str, Any] = {}
    for key, t in model.state_dict().items():
        m = block_key.match(key)
        if not m:
            state[key] = t
        elif int(m[1]) in position:
            j = position[int(m[1])]
            state[f"{prefix}.{j}.{m[2]}"] = _slice(m[2], t, plan, j, head_dim).contiguous()
    config = _pruned_config(model.config, plan, head_dim)
    dtype = next(model.parameters()).dtype
    new = type(model)._from_config(config, dtype=dtype)
    new.to(next(model.parameters()).device)
    with torch.no_grad():
        new.load_state_dict(state, strict=True)
    if getattr(model, "generation_config", None) is not None:
        new.generation_config = copy.deepcopy(model.generation_config)
    new.eval()
    return new


def prune_model(handle: ModelHandle, texts: Sequence[str], *, drop_blocks: int | None = None,
                keep_blocks: Sequence[int] | None = None, mlp_ratio: float = MLP_RATIO,
                heads_ratio: float = HEADS_RATIO, calibration_tokens: int = CALIBRATION_TOKENS) -> PrunedModel:
    """A pruned copy of ``handle`` (the original is untouched): ``drop_blocks`` least-influential blocks removed
    (default: ``DROP_SHARE`` of them; or exactly ``keep_blocks`` kept), ``mlp_ratio`` of every MLP's neurons and
    ``heads_ratio`` of every block's key/value groups kept, chosen by importance measured on the first
    ``calibration_tokens`` tokens of ``texts``. Checks run first (``PruneError``)."""
    target = check(handle, drop_blocks=drop_blocks, keep_blocks=keep_blocks, mlp_ratio=mlp_ratio,
                   heads_ratio=heads_ratio, calibration_tokens=calibration_tokens)
    importance = measure_importance(handle, list(texts), target, calibration_tokens=calibration_tokens)
    plan = plan_prune(target, importance)
    model = apply_plan(handle.model, plan, target.head_dim)
    return PrunedModel(model=model, tokenizer=handle.tokenizer, name=f"{handle.name} (pruned)", kind=handle.kind,
                       plan=plan)
