"""Jupyter server extension: send kernel websocket messages without Nagle's delay.

Jupyter server does not turn on ``TCP_NODELAY`` for the kernel websockets, so a small message sent
while an earlier one is unacknowledged waits for the browser's delayed ACK (about 40 ms on Linux).
A token stream is a steady series of small messages, so every few of them wait that long, and those
waits set the panel's tail latency (figures in benchmarks/RESULTS.md). With ``set_nodelay(True)`` each
message goes out when written. It costs a few more packets on a busy socket, which matters for nothing a notebook sends.

Enabled by ``jupyter-config/server-config/aigc_lab.json`` (installed with the package), or by hand
with ``jupyter server extension enable aigc_lab``. If the server's websocket handler is not the one
this knows, the extension logs that and changes nothing.
"""

from __future__ import annotations

import functools
from typing import Any

_PATCHED = "_aigc_lab_nodelay"


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Turn on ``TCP_NODELAY`` for every kernel websocket this server opens."""
    try:
        from jupyter_server.services.kernels.websocket import KernelWebsocketHandler
    except ImportError:
        serverapp.log.warning("aigc_lab: kernel websocket handler not found; token messages may be delayed")
        return
    if getattr(KernelWebsocketHandler, _PATCHED, False):
        return
    original = KernelWebsocketHandler.open

    @functools.wraps(original)
    async def open_without_nagle(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            self.set_nodelay(True)
        except Exception as exc:  # noqa: BLE001 - latency only: never break the connection
            self.log.debug("aigc_lab: could not set TCP_NODELAY: %s", exc)
        return await original(self, *args, **kwargs)

    KernelWebsocketHandler.open = open_without_nagle
    setattr(KernelWebsocketHandler, _PATCHED, True)
    serverapp.log.info("aigc_lab: kernel websockets send without Nagle's delay (TCP_NODELAY)")
