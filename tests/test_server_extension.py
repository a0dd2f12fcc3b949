"""The Jupyter server extension: kernel websockets are opened with TCP_NODELAY (no Nagle delay)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import aigc_lab
from aigc_lab.jupyter import server_extension

REPO = Path(__file__).resolve().parent.parent


def test_kernel_websocket_sets_nodelay_before_opening(monkeypatch):
    from jupyter_server.services.kernels.websocket import KernelWebsocketHandler as Handler

    calls: list[tuple[str, object]] = []

    async def original_open(self, kernel_id):  # noqa: ANN001
        calls.append(("open", kernel_id))
        return "opened"

    monkeypatch.setattr(Handler, "open", original_open)  # restored after the test, patch included
    monkeypatch.setattr(Handler, "_aigc_lab_nodelay", False, raising=False)
    app = SimpleNamespace(log=logging.getLogger("test-server-ext"))
    server_extension._load_jupyter_server_extension(app)
    server_extension._load_jupyter_server_extension(app)  # loading twice must not wrap twice

    handler = Handler.__new__(Handler)
    handler.set_nodelay = lambda value: calls.append(("nodelay", value))
    assert asyncio.run(Handler.open(handler, "k-1")) == "opened"
    assert calls == [("nodelay", True), ("open", "k-1")]


def test_a_failing_set_nodelay_never_breaks_the_connection(monkeypatch):
    from jupyter_server.services.kernels.websocket import KernelWebsocketHandler as Handler

    opened: list[str] = []

    async def original_open(self, kernel_id):  # noqa: ANN001
        opened.append(kernel_id)

    monkeypatch.setattr(Handler, "open", original_open)
    monkeypatch.setattr(Handler, "_aigc_lab_nodelay", False, raising=False)
    server_extension._load_jupyter_server_extension(SimpleNamespace(log=logging.getLogger("t")))

    def broken(value):  # noqa: ANN001
        raise OSError("socket already closed")

    handler = Handler.__new__(Handler)
    handler.set_nodelay = broken
    monkeypatch.setattr(Handler, "log", logging.getLogger("t"), raising=False)
    asyncio.run(Handler.open(handler, "k-2"))
    assert opened == ["k-2"]


def test_the_package_declares_and_enables_the_extension():
    points = aigc_lab._jupyter_server_extension_points()
    assert points == [{"module": "aigc_lab.jupyter.server_extension"}]
    config = json.loads((REPO / "jupyter-config" / "server-config" / "aigc_lab.json").read_text())
    assert config["ServerApp"]["jpserver_extensions"] == {"aigc_lab": True}
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"jupyter-config/server-config" = "etc/jupyter/jupyter_server_config.d"' in pyproject
