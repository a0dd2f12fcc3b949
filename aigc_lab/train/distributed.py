"""Multi-process (DDP) fine-tuning on Hugging Face Accelerate: from a notebook or from a script.

    res = al.train.finetune_distributed(model, data, num_processes=2, batch_size=4, max_steps=100)
    res.history; res.losses; res.model_path; res.model

Every process runs the same ``Loop`` as ``finetune`` with an ``accelerate.Accelerator`` (DDP: gloo on
CPU, NCCL on GPUs). Process ``r`` of ``n`` takes the ``r``-th slice of every global batch of
``batch_size * n`` rows, so the loss curve equals a one-process run with ``batch_size * n``. Only rank 0
publishes events; they reach the caller's bus live through a queue (and so the panel). ``al.runs.cancel``
stops all processes after the same step; rank 0 then writes a checkpoint. A process that stalls or dies
never hangs the caller: the others give up after ``timeout_s`` in a collective and the run ends "error".

Launch from a notebook or Python: ``finetune_distributed`` (``start_method="auto"``: ``spawn`` with
``torch.multiprocessing`` when CUDA is available or initialised, since a forked child cannot use CUDA its
parent initialised; else ``fork`` through ``accelerate.notebook_launcher``, which starts faster). From a shell:

    python -m aigc_lab.train.distributed --model starter:gpt-tiny --data samples:python_docs -n 2 --max-steps 50
    accelerate launch --num_processes 2 -m aigc_lab.train.distributed --model ... --data ...
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import queue as queue_mod
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .. import runs
from ..bus import EventBus
from ..bus import bus as default_bus
from ..errors import DistributedRunError
from ..progress import progress_bar
from .config import TrainConfig, TrainConfigError

FINAL = "final"
START_METHODS = ("auto", "fork", "spawn")
DEFAULT_TIMEOUT_S = 1800.0  # torch's own default for gloo; NCCL's is 600 s
STALLED = "stalled:"  # how a stall's error message starts

log = logging.getLogger(__name__)


@dataclass
class DistributedRun:
    """What rank 0 reports when a multi-process run ends: the curve, the status and the trained weights.

    The same interface as ``TrainRun`` (``train/interface.py``); ``finetune_distributed`` blocks, so the run
    has ended by the time one exists: ``wait()`` returns at once (raising if it failed) and ``cancel()`` has
    nothing left to stop.
    """

    run: str
    status: str
    world: int
    output_dir: Path
    model_path: Path | None  # ``save_pretrained`` folder of the trained model (LoRA: adapters merged in)
    steps: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    checkpoints: list[Path] = field(default_factory=list)
    error: str | None = None  # why it failed, first process first (``wait()`` raises it)
    ranks_done: list[int] = field(default_factory=list)  # ranks that ended cleanly (all of them unless "error")
    _model: Any = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        """Always True: ``finetune_distributed`` returns when every process has ended."""
        return True

    def wait(self, timeout: float | None = None) -> DistributedRun:  # noqa: ARG002 - the run has ended
        """Return this run; raise ``DistributedRunError`` with the first failure if it ended ``error``."""
        if self.status == "error":
            raise DistributedRunError(f"distributed run {self.run} failed: {self.error}")
        return self

    def cancel(self) -> None:
        """Nothing to stop: the run has ended (``al.runs.cancel(run_id)`` from another thread stops one going)."""

    @property
    def step(self) -> int:
        """The last optimizer step taken."""
        return int(self.steps[-1]["step"]) if self.steps else 0

    @property
    def history(self) -> Any:
        """One row per step (step, epoch, loss, lr, tok_s) with eval columns, as ``TrainRun.history``."""
        from .run import history_frame

        return history_frame(self.steps, self.evals)

    @property
    def losses(self) -> list[float]:
        return [s["loss"] for s in self.steps]

    @property
    def last_checkpoint(self) -> Path | None:
        found = [p for p in self.checkpoints if p.exists()]
        return found[-1] if found else None

    @property
    def model(self) -> Any:
        """The trained model as a ``ModelHandle``, loaded from ``model_path``."""
        if self.model_path is None:
            raise TrainConfigError(f"run {self.run} ended {self.status} without final weights"
                                   + (f" ({self.error})" if self.error else ""))
        if self._model is None:
            from ..models import load

            self._model = load(self.model_path)
        return self._model


@dataclass
class _Job:
    """Everything a worker needs (pickled for ``spawn``; inherited for ``fork``)."""

    model: Any  # ModelHandle or a name for al.models.load
    dataset: Any
    cfg: TrainConfig
    run_id: str
    teacher: Any = None
    val: Any = None
    resume: Any = None
    timeout_s: float = DEFAULT_TIMEOUT_S


class _SharedFlag:
    """A cross-process boolean in shared memory: ``set``/``is_set`` (the Loop's ``cancel_flag`` API), no lock.

    ``multiprocessing.Event`` takes a process-shared lock even to read; a process killed or stopped while
    holding it would block every other process that checks the flag (each rank does, every step). One
    byte written by a single writer and polled by readers needs no lock. Works with fork and spawn (pickled
    while the processes start).
    """

    def __init__(self, ctx: Any) -> None:
        self._v = ctx.RawValue("b", 0)

    def is_set(self) -> bool:
        return bool(self._v.value)

    def set(self) -> None:
        self._v.value = 1


class _RankReport:
    """How one process ended, in shared memory: written by that process alone, read by the parent afterwards.

    Lock-free like ``_SharedFlag``, and independent of the launcher's error formatting: the parent learns
    which ranks finished, and which failed first and why (the root cause: the others fail because of it),
    even when rank 0 was killed before it could report.
    """

    SIZE = 2048  # bytes of error text kept

    def __init__(self, ctx: Any) -> None:
        self._done, self._t = ctx.RawValue("b", 0), ctx.RawValue("d", 0.0)
        self._error = ctx.RawArray("c", self.SIZE)

    def finish(self) -> None:
        self._done.value = 1

    def fail(self, message: str) -> None:
        self._error.value = message.encode("utf-8", "replace")[: self.SIZE - 1]
        self._t.value = time.time()

    @property
    def done(self) -> bool:
        return bool(self._done.value)

    @property
    def failure(self) -> tuple[float, str] | None:
        """(when, error text) if this process failed."""
        return (self._t.value, self._error.value.decode("utf-8", "replace")) if self._t.value else None


class _QueueBus:
    """Rank 0's event bus: hands each event to the parent, which publishes it on the caller's bus."""

    def __init__(self, q: Any) -> None:
        self.q = q

    def publish(self, event: Any) -> None:
        self.q.put(("event", event))


class _LocalBus:
    """Under ``accelerate launch`` (no parent to relay to): rank 0 publishes on this process's bus."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def publish(self, event: Any) -> None:
        self.bus.publish(event)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load(model: Any) -> Any:
    from ..models import ModelHandle, load

    return model if model is None or isinstance(model, ModelHandle) else load(model)


def _is_stall(exc: BaseException) -> bool:
    """A collective or the start-up rendezvous gave up waiting (the process-group timeout); gloo and the
    c10d store raise ``RuntimeError``s that say "Timed out"."""
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, TimeoutError)) and ("timed out" in text or "timeout" in text)


def _describe(exc: BaseException, rank: int, timeout_s: float) -> str:
    """``Type: message`` for the result; a stall says so, with the timeout that ended it."""
    text = f"{type(exc).__name__}: {exc}"
    if not _is_stall(exc):
        return text
    return (f"{STALLED} rank {rank} waited more than timeout_s={timeout_s:g} s for another process "
            f"(it hung or died); {text}")


def _init_kwargs(timeout_s: float) -> Any:
    """``InitProcessGroupKwargs`` that bound every collective's wait (and the start-up rendezvous) to ``timeout_s``."""
    from accelerate.utils import InitProcessGroupKwargs

    timeout = timedelta(seconds=timeout_s)
    if timeout == InitProcessGroupKwargs().timeout:  # to_kwargs() drops values equal to its default (600 s),
        timeout += timedelta(milliseconds=1)  # which would leave the backend's own default (gloo: 1800 s)
    return InitProcessGroupKwargs(timeout=timeout)


def train_process(job: _Job, q: Any = None, cancel: Any = None,
                  reports: list[_RankReport] | None = None) -> dict[str, Any] | None:
    """Train this process's share of ``job``; rank 0 returns (and sends on ``q``) the result dict.

    Run once per process, after the launcher set ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``
    (``notebook_launcher``, ``torch.multiprocessing`` or ``accelerate launch``). ``cancel`` is read each
    step (a ``_SharedFlag``); ``reports[rank]`` records how this process ended. A collective that
    waits more than ``job.timeout_s`` raises (``TimeoutError`` naming the stall), so the launcher ends the
    other processes instead of every one waiting forever.
    """
    import torch
    from accelerate import Accelerator

    from ..models import ModelHandle
    from .loop import Loop

    bus: Any = _QueueBus(q) if q is not None else _LocalBus(default_bus)
    flag = cancel if cancel is not None else threading.Event()
    result: dict[str, Any] | None = None
    accel, rank = None, int(os.environ.get("RANK", "0"))  # until the process group says (it may time out)
    try:
        cpu = job.cfg.device == "cpu" or not torch.cuda.is_available()
        accel = Accelerator(cpu=cpu, mixed_precision="no",  # bf16 autocast comes from the Loop (precision=auto)
                            kwargs_handlers=[_init_kwargs(job.timeout_s)])
        rank, world = accel.process_index, accel.num_processes
        if accel.device.type == "cpu":  # share the cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, world)))
        handle, teacher = _load(job.model), _load(job.teacher)
        loop = Loop(handle, job.dataset, job.cfg, run_id=job.run_id, event_bus=bus, cancel_flag=flag,
                    teacher=teacher, val=job.val, resume=job.resume, inplace=True, rank=rank, world=world,
                    accelerator=accel)
        loop.precheck()
        status = loop.run()
        model_path = None
        if rank == 0 and status in ("ok", "cancelled") and loop.model is not None:
            model = loop._unwrapped()
            if job.cfg.method == "lora":
                from .lora import merge

                model = merge(model)
            model_path = ModelHandle(model=model, tokenizer=loop.tokenizer, name=handle.name,
                                     kind=handle.kind).save(loop.output_dir / FINAL)
        if rank == 0:
            p = loop.progress
            err = None if loop.error is None else _describe(loop.error, rank, job.timeout_s)
            result = {"run": job.run_id, "status": status, "world": world, "output_dir": str(loop.output_dir),
                      "model_path": str(model_path) if model_path else None, "steps": p.steps, "evals": p.evals,
                      "best": p.best, "checkpoints": p.checkpoints, "error": err}
            if q is not None:
                q.put(("result", result))
        if loop.error is not None:
            raise loop.error
        accel.wait_for_everyone()
    except BaseException as exc:
        msg = _describe(exc, rank, job.timeout_s)
        if reports is not None:
            reports[rank].fail(msg)
        if _is_stall(exc) and not isinstance(exc, TimeoutError):  # the launcher's own report names it too
            raise TimeoutError(msg) from exc
        raise
    finally:
        if accel is not None:
            accel.end_training()
    if reports is not None:
        reports[rank].finish()
    return result


def _spawn_entry(index: int, job: _Job, q: Any, cancel: Any, reports: list[_RankReport],
                 world: int) -> None:  # noqa: ARG001
    os.environ["RANK"] = os.environ["LOCAL_RANK"] = str(index)
    train_process(job, q, cancel, reports)


def _relay(q: Any, bus: Any, flag: threading.Event, cancel: _SharedFlag, stop: threading.Event,
           out: dict[str, Any], bar: Any) -> None:
    """Parent thread: publish rank 0's events on the caller's bus; pass a cancel request on (once).

    Runs until ``stop`` (set when the launcher returned or raised) and the queue is drained. It must keep
    reading whatever a sink does: rank 0 cannot exit while its queued events are unread.
    """
    sent = False
    while True:
        if not sent and flag.is_set():
            cancel.set()
            sent = True
        try:
            kind, payload = q.get(timeout=0.05)
        except queue_mod.Empty:
            if stop.is_set():
                return
            continue
        if kind != "event":
            out[kind] = payload
            continue
        try:
            bus.publish(payload)
            if bar is not None and getattr(payload, "type", "") == "train.step":
                bar.update(1)
                bar.set_postfix(loss=f"{payload.loss:.4f}", refresh=False)
        except Exception:  # noqa: BLE001 - a failing sink must not stop the relay (rank 0 would block)
            log.exception("aigc_lab: relaying %s failed", getattr(payload, "type", payload))


def finetune_distributed(model: Any, dataset: Any, method: str = "full", teacher: Any = None, *,
                         num_processes: int = 2, val: Any = None, resume: Any = None,
                         event_bus: EventBus | None = None, start_method: str = "auto", port: int | None = None,
                         timeout_s: float = DEFAULT_TIMEOUT_S, **hparams: Any) -> DistributedRun:
    """Fine-tune on ``num_processes`` processes (DDP through Accelerate); block; return rank 0's result.

    Arguments as ``finetune`` (``batch_size`` is per process: the global batch is ``batch_size *
    num_processes``). ``start_method``: ``"auto"`` (default; ``start_method_for``), ``"fork"``
    (``accelerate.notebook_launcher``; needs CUDA untouched in this process) or ``"spawn"`` (fresh
    interpreters through ``torch.multiprocessing``; ``model`` and ``dataset`` are pickled to them). Trained
    weights are saved (``save_pretrained``) under ``<output_dir>/final``; ``.model`` loads them.

    ``timeout_s`` bounds how long a process waits for the others in one collective (the process group's
    timeout, start-up included): if a process hangs or dies, the others raise after it, the launcher ends
    the rest, and the result has ``status="error"`` with an error that says "stalled" (or a
    ``RuntimeError`` when rank 0 itself never reported). It must exceed the longest time one process
    works alone while the others wait: rank 0's checkpoint saves and evaluations, loading the model.
    """
    import multiprocessing as mp

    from ..models import ModelHandle

    if num_processes < 1:
        raise TrainConfigError("num_processes must be >= 1")
    start_method = start_method_for(start_method)
    if not timeout_s > 0:
        raise TrainConfigError("timeout_s must be > 0 (seconds a process may wait for the others)")
    cfg = TrainConfig.from_kwargs(method, {**hparams, "progress": False})
    if method == "distill" and teacher is None:
        raise TrainConfigError("method='distill' needs teacher=<a ModelHandle> (a larger model, same tokenizer)")
    run_id = runs.new_run_id("train")
    if cfg.output_dir is None:
        from . import checkpoint as ckpt

        out = str(ckpt.resolve(resume).parent) if resume is not None else f"aigc_runs/{run_id}"
        cfg = dataclasses.replace(cfg, output_dir=str(Path(out).resolve()))
    else:
        cfg = dataclasses.replace(cfg, output_dir=str(Path(cfg.output_dir).resolve()))
    if not isinstance(model, ModelHandle):
        model = os.fspath(model)
    job = _Job(model=model, dataset=dataset, cfg=cfg, run_id=run_id, teacher=teacher, val=val, resume=resume,
               timeout_s=float(timeout_s))
    ctx = mp.get_context(start_method)
    q, cancel = ctx.Queue(), _SharedFlag(ctx)
    reports = [_RankReport(ctx) for _ in range(num_processes)]
    flag = runs.register(run_id)
    stop, out = threading.Event(), {}
    bar = None
    if hparams.get("progress", True):
        bar = progress_bar(total=cfg.max_steps, desc=f"{run_id} x{num_processes}", leave=True, dynamic_ncols=True)
    relay = threading.Thread(target=_relay, args=(q, event_bus or default_bus, flag, cancel, stop, out, bar),
                             name=f"aigc-lab-relay-{run_id}", daemon=True)
    relay.start()
    launch_error: BaseException | None = None
    try:
        with _quiet_stdout():
            if start_method == "fork":
                from accelerate import notebook_launcher

                notebook_launcher(train_process, args=(job, q, cancel, reports), num_processes=num_processes,
                                  mixed_precision="no", use_port=str(port or free_port()))
            else:
                _spawn(job, q, cancel, reports, num_processes, port or free_port())
    except BaseException as exc:  # noqa: BLE001 - reported with rank 0's error below
        launch_error = exc
    finally:
        stop.set()
        relay.join(timeout=30)
        runs.unregister(run_id)
        if bar is not None:
            bar.close()
    if relay.is_alive():  # blocked on a message a killed rank 0 never finished writing: give up on it
        log.warning("aigc_lab: %s: the event relay did not stop; events after this may be lost", run_id)
    res = out.get("result")
    done = [r for r, rep in enumerate(reports) if rep.done]
    cause = _cause(reports, launch_error)
    if res is None:
        raise DistributedRunError(
            f"distributed run {run_id} failed: {cause or 'no result from rank 0'}") from launch_error
    status, error = res["status"], res["error"]
    if status == "error" and cause and cause != error:  # another rank failed first (e.g. rank 0 was the one stuck)
        error = f"{cause} (then rank 0: {error})"
    elif status != "error" and (launch_error is not None or len(done) < num_processes):
        missing = [r for r in range(num_processes) if r not in done]
        status, error = "error", f"rank(s) {missing} did not finish" + (f": {cause}" if cause else "")
    return DistributedRun(run=res["run"], status=status, world=res["world"], output_dir=Path(res["output_dir"]),
                          model_path=Path(res["model_path"]) if res["model_path"] else None, steps=res["steps"],
                          evals=res["evals"], best=res["best"], checkpoints=[Path(p) for p in res["checkpoints"]],
                          error=error,
                          ranks_done=done)


def start_method_for(requested: str = "auto") -> str:
    """The start method a launch uses: ``"auto"`` is ``"spawn"`` when CUDA is available or already initialised
    here (a forked child cannot use CUDA its parent initialised: "Cannot re-initialize CUDA in forked
    subprocess"), else ``"fork"``. ``"fork"`` asked for after CUDA was initialised is refused, with why."""
    import torch

    if requested not in START_METHODS:
        raise TrainConfigError(f"start_method must be one of {', '.join(START_METHODS)}, not {requested!r}")
    if requested == "auto":
        return "spawn" if torch.cuda.is_available() or torch.cuda.is_initialized() else "fork"
    if requested == "fork" and torch.cuda.is_initialized():
        raise TrainConfigError("start_method='fork' cannot work here: this process has initialised CUDA, and a "
                               "forked child cannot use it; use start_method='spawn' (or 'auto')")
    return requested


def _cause(reports: list[_RankReport], launch_error: BaseException | None) -> str:
    """Why a run failed: the first process's error (the others failed after it), else the launcher's."""
    failures = sorted(f for f in (rep.failure for rep in reports) if f is not None)
    if failures:
        return failures[0][1]
    return f"{type(launch_error).__name__}: {launch_error}" if launch_error is not None else ""


def _spawn(job: _Job, q: Any, cancel: Any, reports: list[_RankReport], n: int, port: int) -> None:
    """``torch.multiprocessing`` launch with fresh interpreters (no fork of this process's threads)."""
    import torch.multiprocessing as tmp

    env = {"WORLD_SIZE": str(n), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "LOCAL_WORLD_SIZE": str(n)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        tmp.start_processes(_spawn_entry, args=(job, q, cancel, reports, n), nprocs=n, start_method="spawn")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_stdout() -> Any:
    """``notebook_launcher`` prints a 'Launching training on N CPUs.' line: keep notebooks clean."""
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        yield


# -- script entry point --------------------------------------------------------------------------


def _dataset(spec: str) -> Any:
    if spec.startswith("samples:"):
        from ..data import samples

        return getattr(samples, spec.split(":", 1)[1])()
    from ..data import load

    return load(spec)


def _hparams(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = raw
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aigc_lab.train.distributed",
                                     description="Multi-process fine-tuning (DDP through Hugging Face Accelerate).")
    parser.add_argument("--model", required=True, help="a name for al.models.load: folder, hub id, starter:...")
    parser.add_argument("--data", required=True, help="a file for al.data.load, or samples:<name> (e.g. python_docs)")
    parser.add_argument("--method", default="full", choices=("full", "lora"))
    parser.add_argument("-n", "--num-processes", type=int, default=2, help="ignored under accelerate launch")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--batch-size", type=int, help="per process")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--output-dir")
    parser.add_argument("--start-method", default="auto", choices=START_METHODS)
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds a process may wait for the others before the run fails (a stall)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more hyper-parameters (JSON)")
    args = parser.parse_args(argv)
    hp = _hparams(args.set)
    for key in ("max_steps", "batch_size", "lr", "output_dir"):
        if getattr(args, key) is not None:
            hp[key] = getattr(args, key)
    data = _dataset(args.data)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:  # accelerate launch / torchrun
        cfg = TrainConfig.from_kwargs(args.method, {**hp, "progress": False})
        run_id = f"train-{os.environ.get('MASTER_PORT', '0')}-dist"
        if cfg.output_dir is None:
            cfg = dataclasses.replace(cfg, output_dir=f"aigc_runs/{run_id}")
        res = train_process(_Job(model=args.model, dataset=data, cfg=cfg, run_id=run_id, timeout_s=args.timeout_s))
        if res is not None:
            print(json.dumps({k: res[k] for k in ("run", "status", "world", "output_dir", "model_path", "error")}
                             | {"losses": [s["loss"] for s in res["steps"]]}))
        return 0
    res2 = finetune_distributed(args.model, data, args.method, num_processes=args.num_processes,
                                start_method=args.start_method, timeout_s=args.timeout_s, **hp)
    print(json.dumps({"run": res2.run, "status": res2.status, "world": res2.world, "output_dir": str(res2.output_dir),
                      "model_path": str(res2.model_path) if res2.model_path else None, "error": res2.error,
                      "losses": res2.losses}))
    return 0 if res2.status in ("ok", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
