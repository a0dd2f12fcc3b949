"""``TrainRun`` and ``DistributedRun`` share one interface (``train/interface.py``)."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from aigc_lab.bus import EventBus
from aigc_lab.errors import AigcLabError, DistributedRunError, RunNotFinishedError
from aigc_lab.models import ModelHandle, train_tokenizer
from aigc_lab.train import DistributedRun, FinetuneRun, TrainRun, finetune

CORPUS = ["the cat sat on the mat", "a dog ran after the cat"] * 8
MEMBERS = sorted({*FinetuneRun.__annotations__, *(n for n in vars(FinetuneRun) if not n.startswith("_"))})


def _distributed(status: str = "ok", error: str | None = None, model=None) -> DistributedRun:
    """A result as ``finetune_distributed`` returns it (``model``: as if already loaded from ``model_path``)."""
    return DistributedRun(run="train-x", status=status, world=2, output_dir=Path("."), model_path=Path("final"),
                          steps=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}],
                          checkpoints=[Path("step-000002")], error=error, _model=model)


def test_both_runs_have_every_member_with_the_same_signature():
    assert {"status", "wait", "cancel", "steps", "losses", "history", "model", "checkpoints"} <= set(MEMBERS)
    for cls in (TrainRun, DistributedRun):
        fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        for name in MEMBERS:
            assert hasattr(cls, name) or name in fields or name == "run" and cls is TrainRun, \
                f"{cls.__name__} lacks {name}"
        for method in ("wait", "cancel"):
            assert inspect.signature(getattr(cls, method)).parameters.keys() == \
                inspect.signature(getattr(FinetuneRun, method)).parameters.keys(), (cls, method)


def test_a_finished_train_run_and_a_distributed_result_are_finetune_runs(tmp_path):
    tok = train_tokenizer(CORPUS, 200)
    h = ModelHandle(GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2,
                                               n_positions=32)), tok, "gpt", "causal")
    run = finetune(h, CORPUS, max_steps=2, batch_size=4, max_length=16, event_bus=EventBus(), progress=False,
                   background=False, output_dir=tmp_path)
    dist = _distributed(model=h)
    for r in (run, dist):
        assert isinstance(r, FinetuneRun)
        assert r.done and r.wait() is r and r.step == 2 and len(r.losses) == 2 and len(r.steps) == 2
        assert all(isinstance(p, Path) for p in r.checkpoints)
        r.cancel()  # nothing left to stop: a no-op on an ended run
        assert list(r.history["step"]) == [1, 2]


def test_a_failed_distributed_run_raises_from_wait_and_a_running_run_refuses_model():
    with pytest.raises(DistributedRunError, match="stalled: rank 1") as err:
        _distributed("error", "stalled: rank 1 waited").wait()
    assert isinstance(err.value, AigcLabError) and isinstance(err.value, RuntimeError)
    assert issubclass(RunNotFinishedError, RuntimeError) and issubclass(RunNotFinishedError, AigcLabError)
