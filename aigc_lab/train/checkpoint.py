"""Atomic checkpoints with everything needed to resume a run exactly.

A checkpoint is a folder ``step-000120/`` holding ``model/`` (full fine-tune: ``save_pretrained``
safetensors + tokenizer, loadable by any Hugging Face tool) or ``adapter/`` (LoRA: adapter weights and
config only), ``state.pt`` (optimizer, scheduler, RNG states of python/numpy/torch) and
``trainer.json`` (step, data position, config, best eval, the curve so far). It is written into a
temporary folder beside the target and renamed into place, so a crash or cancel never leaves a
half-written checkpoint under a real name.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_folder
from .config import TrainConfigError

STATE = "state.pt"
META = "trainer.json"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU + CUDA) RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state(),
                             "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos),
                                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())  # RNG states are CPU byte tensors wherever the state was mapped
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _write(tmp: Path, *, model: Any, tokenizer: Any, adapter: dict[str, Any] | None, optimizer: Any,
           scheduler: Any, meta: dict[str, Any]) -> None:
    import torch

    if adapter is not None:
        from .lora import save_adapter

        save_adapter(model, adapter, tmp / "adapter")
    else:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "model")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
               tmp / STATE)
    (tmp / META).write_text(json.dumps(meta, indent=1, default=float))


def save(directory: str | os.PathLike[str], step: int, **parts: Any) -> Path:
    """Write checkpoint ``step`` under ``directory`` atomically; return its path (existing one is replaced)."""
    return write_folder(Path(directory) / f"step-{step:06d}", lambda tmp: _write(tmp, **parts))


def prune(directory: str | os.PathLike[str], keep: int, protect: Path | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints (never ``protect``)."""
    found = sorted(Path(directory).glob("step-*"))
    for old in found[:-keep] if keep > 0 else found:
        if protect is None or old.resolve() != protect.resolve():
            shutil.rmtree(old, ignore_errors=True)


def latest(directory: str | os.PathLike[str]) -> Path | None:
    found = sorted(Path(directory).glob("step-*"))
    return found[-1] if found else None


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``trainer.json`` of a checkpoint (``path`` may also be a run folder: its newest checkpoint)."""
    return json.loads((resolve(path) / META).read_text())


def resolve(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if (p / META).exists():
        return p
    last = latest(p) if p.is_dir() else None
    if last is None:
        raise TrainConfigError(f"{path} is not a checkpoint (no {META}) nor a folder of step-* checkpoints")
    return last


def load_weights(model: Any, path: Path, device: Any = "cpu") -> None:
    """Load the full-model weights saved in ``path/model`` into ``model`` (tied weights may be absent), read
    straight onto ``device`` (the run's: a checkpoint written on a GPU resumes on a CPU and back)."""
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for f in sorted((path / "model").glob("*.safetensors")):
        state.update(load_file(f, device=str(device)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    current = model.state_dict()
    loaded = {current[k].data_ptr() for k in state if k in current}
    left = [k for k in missing if current[k].data_ptr() not in loaded]  # tied weights share storage
    if unexpected or left:
        raise TrainConfigError(f"checkpoint {path} does not match this model (missing {left[:3]}, unexpected "
                               f"{unexpected[:3]}): resume with the model the run started from")


def load_state(path: Path, device: Any = "cpu") -> dict[str, Any]:
    """Optimizer, scheduler and RNG states of a checkpoint, mapped onto ``device`` (the run's device, whatever
    device wrote them: without ``map_location`` a GPU-written state fails to load on a CPU-only machine)."""
    import torch

    return torch.load(path / STATE, weights_only=True, map_location=device)
