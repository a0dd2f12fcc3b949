"""Fixtures of the aigc-lab UI tests: one JupyterLab server and one headless Chromium per session.

The machinery lives in aigc_ui_harness.py. Nothing here skips: a browser or server that cannot start
fails the tests with the reason.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under --import-mode=importlib
from aigc_ui_harness import (
    _JS_INSTALL,
    ARTIFACTS,
    STEP_TIMEOUT,
    BrowserStartError,
    Lab,
    ServerStartError,
    launch_browser,
    start_server,
    stop_server,
)  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def pw():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def lab_server():
    try:
        server = start_server()
    except ServerStartError as exc:
        pytest.fail(str(exc))
    yield server
    stop_server(server)
    shutil.rmtree(server.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def browser_context(pw):
    try:
        context, user_dir = launch_browser(pw)
    except BrowserStartError as exc:
        pytest.fail(str(exc))
    yield context
    context.close()
    shutil.rmtree(user_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def lab(lab_server, browser_context) -> Lab:
    page = browser_context.pages[0] if browser_context.pages else browser_context.new_page()
    console: list[tuple[str, str]] = []
    page.on("console", lambda m: console.append((m.type, m.text)))
    page.on("pageerror", lambda e: console.append(("pageerror", str(e))))
    page.goto(f"{lab_server.url}lab?reset", wait_until="domcontentloaded",
              timeout=STEP_TIMEOUT * 1000)
    try:
        page.wait_for_function("() => !!window.jupyterapp", timeout=STEP_TIMEOUT * 1000)
        page.evaluate("async () => { await window.jupyterapp.restored; }")
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"JupyterLab did not load in the browser: {exc}\n{lab_server.log_tail()}")
    page.evaluate(_JS_INSTALL)
    return Lab(page=page, server=lab_server, console=console)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(autouse=True)
def _artifacts(request):
    """After each browser test: full-page screenshot to artifacts/; on failure, the server log tail."""
    yield
    if "lab" not in request.fixturenames:
        return
    lab: Lab = request.getfixturevalue("lab")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        lab.page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    except Exception as exc:  # noqa: BLE001
        print(f"(screenshot failed: {exc})")
    failed = any(getattr(request.node, f"rep_{w}", None) is not None
                 and getattr(request.node, f"rep_{w}").failed for w in ("setup", "call"))
    if failed:
        print("\n----- jupyter server log (tail) -----\n" + lab.server.log_tail(60))
        print("----- browser console (tail) -----")
        for kind, text in lab.console[-30:]:
            print(f"[{kind}] {text[:500]}")
