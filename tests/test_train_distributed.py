"""Multi-process fine-tuning (DDP through Accelerate, gloo on CPU): 2 processes = 1 process with the global batch.

Every launch runs under ``deadline``: a hung rank fails the test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import aigc_lab as al
from aigc_lab.bus import EventBus, Recorder
from aigc_lab.models import ModelHandle, train_tokenizer
from aigc_lab.train import finetune, finetune_distributed
from aigc_lab.train.loop import Loop

CORPUS = al.data.samples.python_docs()[:12]
HP = dict(progress=False, max_length=32, lr=3e-3, seed=0)
LAUNCH_S = 300  # a launch that takes longer has hung (each takes ~10 s on 2 cores)
STALL_S = 120  # timeout_s unless a test says: a stalled rank fails the run, with "stalled", well before LAUNCH_S


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail, never hang: past ``seconds`` kill this process's children (the ranks, so the launcher returns);
    a minute later interrupt the test process itself."""
    fired, done = threading.Event(), threading.Event()

    def kill() -> None:
        fired.set()
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
        if not done.wait(60):
            os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()
    try:
        yield
    except BaseException as exc:
        if fired.is_set():
            raise AssertionError(f"hung: still running after {seconds} s (its processes were killed)") from exc
        raise
    finally:
        done.set()
        timer.cancel()
    assert not fired.is_set(), f"hung: still running after {seconds} s (its processes were killed)"


def distributed(*args, deadline_s: float = LAUNCH_S, timeout_s: float = STALL_S, **kwargs):
    with deadline(deadline_s):
        return finetune_distributed(*args, timeout_s=timeout_s, **kwargs)


def rank_hook(monkeypatch, rank: int, step: int, action) -> None:
    """Run ``action()`` in process ``rank`` before its optimizer step ``step`` (0-based); the forked ranks
    inherit the patched ``Loop``."""
    real = Loop._step

    def step_hook(self, i):
        if self.rank == rank and i == step:
            action()
        return real(self, i)

    monkeypatch.setattr(Loop, "_step", step_hook)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, 384)


def gpt(tok):
    """2 layers x 64 wide, dropout off: the curve depends only on the data order and the batch."""
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=64, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    return ModelHandle(GPT2LMHeadModel(cfg), tok, "gpt-2x64", "causal")


def single(tok, tmp_path, **hp):
    """The one-process reference, with the model's own loss as DDP uses (the fused loss equals it only to
    float rounding, which a few Adam steps grow past ``same_weights``' tolerance)."""
    return finetune(gpt(tok), CORPUS, background=False, event_bus=EventBus(), output_dir=tmp_path / "single",
                    fused_loss=False, **{**HP, **hp})


def same_weights(a, b, atol=1e-5):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=atol) for k in sa)


def test_two_processes_match_one_process_with_the_global_batch(tok, tmp_path):
    one = single(tok, tmp_path, batch_size=8, max_steps=10)
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    res = distributed(gpt(tok), CORPUS, num_processes=2, batch_size=4, max_steps=10, event_bus=bus,
                      output_dir=tmp_path / "ddp", **HP)
    assert res.status == "ok" and res.world == 2 and res.error is None and res.ranks_done == [0, 1]
    np.testing.assert_allclose(res.losses, one.history.loss.tolist(), rtol=1e-4)
    assert list(res.history.step) == list(range(1, 11))
    # rank 0 alone published, live on the caller's bus: one start, every step once, one checkpoint, one end
    r = rec[res.run]
    assert r.start.kind == "train" and r.start.config["world"] == 2 and r.start.config["batch_size"] == 4
    assert [s.step for s in r.steps] == list(range(1, 11)) and [s.loss for s in r.steps] == res.losses
    assert all(s.tok_s > 0 and s.eta_s is not None for s in r.steps) and r.steps[-1].eta_s == 0
    assert [c.step for c in r.checkpoints] == [10] and r.end.status == "ok"
    # the trained weights: saved with save_pretrained, equal to the one-process run's
    assert res.model_path == tmp_path / "ddp" / "final" and (res.model_path / "config.json").exists()
    assert same_weights(res.model.model, one.model.model)


def test_lora_with_grad_accum_matches_and_cancel_stops_every_process(tok, tmp_path):
    hp = dict(method="lora", lora_dropout=0.0, grad_accum=2, max_steps=4)
    one = finetune(gpt(tok), CORPUS, background=False, event_bus=EventBus(), output_dir=tmp_path / "one",
                   batch_size=4, **hp, **HP)
    res = distributed(gpt(tok), CORPUS, num_processes=2, batch_size=2, event_bus=EventBus(),
                      output_dir=tmp_path / "lora", **hp, **HP)
    assert res.status == "ok" and res.ranks_done == [0, 1]
    np.testing.assert_allclose(res.losses, one.history.loss.tolist(), rtol=1e-4)
    assert same_weights(res.model.model, one.model.model)  # merged adapters, saved as a plain model

    bus = EventBus()
    bus.subscribe(lambda ev: ev.type == "train.step" and ev.step == 2 and al.runs.cancel(ev.run))
    res = distributed(gpt(tok), CORPUS, num_processes=2, batch_size=4, max_steps=400, event_bus=bus,
                      output_dir=tmp_path / "cancel", **HP)
    assert res.status == "cancelled" and 2 <= len(res.steps) < 400 and res.ranks_done == [0, 1]
    assert res.last_checkpoint.name == f"step-{len(res.steps):06d}"  # both ranks stopped after the same step
    assert json.loads((res.last_checkpoint / "trainer.json").read_text())["step"] == len(res.steps)


def test_spawn_start_method_gives_the_same_curve(tok, tmp_path):
    one = single(tok, tmp_path, batch_size=8, max_steps=3)
    res = distributed(gpt(tok), CORPUS, num_processes=2, batch_size=4, max_steps=3, event_bus=EventBus(),
                      output_dir=tmp_path / "spawn", start_method="spawn", **HP)
    assert res.status == "ok" and res.ranks_done == [0, 1]  # the shared flags work in spawned processes too
    np.testing.assert_allclose(res.losses, one.history.loss.tolist(), rtol=1e-4)


def test_script_entry_point(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "aigc_lab.train.distributed", "--model", "starter:gpt-tiny", "--data",
         "samples:python_docs", "-n", "2", "--max-steps", "2", "--batch-size", "2", "--output-dir",
         str(tmp_path / "cli"), "--timeout-s", str(STALL_S), "--set", "max_length=32", "seed=1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["world"] == 2 and len(summary["losses"]) == 2
    assert (tmp_path / "cli" / "final" / "config.json").exists()


def test_distill_in_two_processes_matches_one_process(tok, tmp_path):
    """Each process runs the teacher on its own slice of the global batch: same curve as one process."""
    teacher = gpt(tok)
    with torch.no_grad():  # a different model with the same tokenizer, so the KL term matters
        for p in teacher.model.parameters():
            p.mul_(1.5)
    hp = dict(method="distill", teacher=teacher, max_steps=4, temperature=2.0, alpha=0.5)
    one = finetune(gpt(tok), CORPUS, background=False, event_bus=EventBus(), output_dir=tmp_path / "one",
                   batch_size=8, **hp, **HP)
    res = distributed(gpt(tok), CORPUS, num_processes=2, batch_size=4, event_bus=EventBus(),
                      output_dir=tmp_path / "ddp", **hp, **HP)
    assert res.status == "ok" and res.world == 2 and res.ranks_done == [0, 1]
    np.testing.assert_allclose(res.losses, one.history.loss.tolist(), rtol=1e-4)
    assert same_weights(res.model.model, one.model.model)


@pytest.mark.parametrize("stuck", [1, 0])
def test_a_stalled_rank_ends_the_run_with_an_error_after_timeout_s(tok, tmp_path, monkeypatch, stuck):
    """One process hangs before its 3rd step: the other gives up after ``timeout_s``, the launcher stops the
    stuck one, and the run ends "error", naming the stall (rank 0 stuck: rank 1 reports it)."""
    rank_hook(monkeypatch, stuck, 2, lambda: time.sleep(3600))
    res = distributed(gpt(tok), CORPUS, num_processes=2, batch_size=4, max_steps=10, event_bus=EventBus(),
                      output_dir=tmp_path / "stall", timeout_s=5, deadline_s=45, **HP)  # ~7 s on 2 cores
    assert res.status == "error" and res.ranks_done == [] and len(res.steps) == 2
    assert res.error.startswith(f"stalled: rank {1 - stuck} waited more than timeout_s=5 s"), res.error


def test_a_killed_rank_ends_the_run_with_an_error(tok, tmp_path, monkeypatch):
    """Rank 1 is killed (as by the OOM killer): rank 0's collective fails at once; the run ends "error"."""
    rank_hook(monkeypatch, 1, 2, lambda: os.kill(os.getpid(), signal.SIGKILL))
    res = distributed(gpt(tok), CORPUS, num_processes=2, batch_size=4, max_steps=10, event_bus=EventBus(),
                      output_dir=tmp_path / "killed", timeout_s=30, deadline_s=60, **HP)
    assert res.status == "error" and 1 not in res.ranks_done and len(res.steps) == 2 and res.error
