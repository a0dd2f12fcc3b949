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
    ARTIFACTS,
    BrowserStartError,
    Lab,
    ServerStartError,
    launch_browser,
    open_lab,
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
        # a kernel that dies stays dead (test_connection shows that state); none of the tests wants a silent revival
        server = start_server(["--KernelRestarter.restart_limit=0"])
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
    return open_lab(page, lab_server)


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
