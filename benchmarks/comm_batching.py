"""How the comm sink batches a token stream, and what it costs the decode loop. Prints one JSON object.

- `burst`: N tokens published as fast as possible -> comm messages sent, tokens delivered, in order.
- `paced`: tokens at a fixed rate (default 500/s) -> messages sent and worst token wait in the batcher.
- `engine`: a starter model decoding with and without the bridge attached, interleaved rounds, medians
  and the ratio measured side by side (goal: >= 0.97, the sink must not slow generation).

The send function JSON-encodes each message, as the real comm does, but does no socket I/O.
Usage: python benchmarks/comm_batching.py [--tokens 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import aigc_lab as al
from aigc_lab.bus import EventBus
from aigc_lab.events import Token
from aigc_lab.jupyter.comm_bridge import CommBridge


class CountingSend:
    def __init__(self) -> None:
        self.messages = 0
        self.items: list[tuple[int, float]] = []  # (index, perf_counter when sent)
        self.lock = threading.Lock()

    def __call__(self, msg: dict) -> None:
        json.dumps(msg)
        now = time.perf_counter()
        with self.lock:
            self.messages += 1
            self.items.extend((it["i"], now) for it in msg.get("items", ()))


def burst(n: int) -> dict:
    bus, send = EventBus(), CountingSend()
    bridge = CommBridge(send, event_bus=bus)
    t = time.perf_counter()
    for i in range(n):
        bus.publish(Token(run="b", i=i, id=i, text="x", ms=0.0))
    publish_us = (time.perf_counter() - t) / n * 1e6
    bridge.close()
    order = [i for i, _ in send.items]
    return {"tokens": n, "messages": send.messages, "delivered": len(order), "in_order": order == list(range(n)),
            "publish_us_per_token": round(publish_us, 2)}


def paced(n: int, rate: float) -> dict:
    bus, send = EventBus(), CountingSend()
    bridge = CommBridge(send, event_bus=bus)
    published = []
    t0 = time.perf_counter()
    for i in range(n):
        target = t0 + i / rate
        while time.perf_counter() < target:
            pass
        published.append(time.perf_counter())
        bus.publish(Token(run="p", i=i, id=i, text="x", ms=0.0))
    time.sleep(0.1)
    bridge.close()
    waits = sorted((sent - published[i]) * 1000 for i, sent in send.items)
    return {"tokens": n, "rate_tok_s": rate, "messages": send.messages, "delivered": len(waits),
            "batch_wait_p50_ms": round(statistics.median(waits), 2),
            "batch_wait_max_ms": round(waits[-1], 2)}


def engine(rounds: int, new_tokens: int) -> dict:
    model = al.models.load("starter:gpt-tiny")
    plain_bus, sink_bus = EventBus(), EventBus()
    bridge = CommBridge(CountingSend(), event_bus=sink_bus)
    al.generate(model, "warm up", max_new_tokens=16, event_bus=plain_bus).wait()
    plain, with_sink = [], []
    for _ in range(rounds):  # interleaved, so drift in machine load hits both sides alike
        for bus, out in ((plain_bus, plain), (sink_bus, with_sink)):
            s = al.generate(model, "The interpreter", max_new_tokens=new_tokens, event_bus=bus)
            out.append(s.metrics.tok_s)
    bridge.close()
    mp, ms = statistics.median(plain), statistics.median(with_sink)
    return {"model": "starter:gpt-tiny", "new_tokens": new_tokens, "rounds": rounds,
            "plain_tok_s_median": round(mp, 1), "plain_tok_s_range": [round(min(plain), 1), round(max(plain), 1)],
            "sink_tok_s_median": round(ms, 1), "sink_tok_s_range": [round(min(with_sink), 1), round(max(with_sink), 1)],
            "ratio_sink_vs_plain": round(ms / mp, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=float, default=500.0)
    args = ap.parse_args()
    print(json.dumps({"burst": burst(args.tokens), "paced": paced(args.tokens // 4, args.rate),
                      "engine": engine(args.rounds, 128)}, indent=2))


if __name__ == "__main__":
    main()
