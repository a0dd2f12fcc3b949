"""LoRA through ``peft``: adapters on the right modules per architecture, saved apart, merged on demand."""

from __future__ import annotations

from typing import Any

from .config import TrainConfig, TrainConfigError

# model_type -> (target module names, fan_in_fan_out); anything else: every nn.Linear named like an attention/MLP
TARGETS: dict[str, tuple[tuple[str, ...], bool]] = {
    "gpt2": (("c_attn", "c_proj", "c_fc"), True),  # Conv1D layers store weights transposed
    "llama": (("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), False),
    "qwen2": (("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), False),
    "qwen3": (("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), False),
    "mistral": (("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), False),
    "t5": (("q", "k", "v", "o", "wi", "wo"), False),
    "bart": (("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"), False),
    "gpt_neox": (("query_key_value", "dense"), False),
}
_FALLBACK = ("q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "c_attn")


def lora_targets(model: Any, override: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], bool]:
    """Module names to adapt and whether their weights are stored (in, out) like GPT-2's ``Conv1D``."""
    model_type = getattr(model.config, "model_type", "")
    names, fan_in_fan_out = TARGETS.get(model_type, (_FALLBACK, False))
    if override:
        names = tuple(override)
    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    found = tuple(n for n in names if n in present)
    if not found:
        raise TrainConfigError(f"no LoRA target modules found in this {model_type or type(model).__name__} model "
                               f"(looked for {', '.join(names)}); pass lora_targets=[...] with its module names")
    return found, fan_in_fan_out


def apply_lora(model: Any, kind: str, cfg: TrainConfig, trainable_tokens: tuple[int, ...] = ()) -> Any:
    """Wrap ``model`` in a ``PeftModel`` whose only trainable parameters are the adapters, and the embedding rows
    of ``trainable_tokens`` (peft's trainable tokens; with tied embeddings the output rows follow)."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets, fan_in_fan_out = lora_targets(model, cfg.lora_targets)
    task = TaskType.SEQ_2_SEQ_LM if kind == "seq2seq" else TaskType.CAUSAL_LM
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=list(targets), fan_in_fan_out=fan_in_fan_out, task_type=task, bias="none",
                        trainable_token_indices=list(trainable_tokens) or None)
    import warnings

    with warnings.catch_warnings():  # peft probes transformers' deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def adapter_state(model: Any) -> dict[str, Any]:
    """A CPU copy of the adapter weights (small), saved apart from the base model."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu").clone() for k, v in get_peft_model_state_dict(model).items()}


def save_adapter(model: Any, state: dict[str, Any], path: Any) -> None:
    """Write ``adapter_model.safetensors`` + ``adapter_config.json`` (what ``PeftModel.from_pretrained`` reads)."""
    from pathlib import Path

    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].save_pretrained(path)
    save_file({k: v.contiguous() for k, v in state.items()}, path / "adapter_model.safetensors")


def load_adapter_into(model: Any, path: Any, device: Any = "cpu") -> None:
    """Load saved adapter weights into a ``PeftModel`` built with the same config, read onto ``device``."""
    from pathlib import Path

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(Path(path) / "adapter_model.safetensors", device=str(device)))


def merge(model: Any) -> Any:
    """Fold the adapters into the base weights; the result is a plain ``transformers`` model.

    The adapted layers' base weights are cloned first: they may share storage with the original model
    (``models.handle.shared_copy``), which must not change.
    """
    import torch

    for module in model.modules():
        base = getattr(module, "base_layer", None)
        weight = getattr(base, "weight", None)
        if isinstance(weight, torch.nn.Parameter):
            base.weight = torch.nn.Parameter(weight.detach().clone(), requires_grad=False)
    return model.merge_and_unload()
