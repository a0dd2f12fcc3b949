"""The lock is what is installed and what the README says (tools/versions.py; `make lock` writes both)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("versions", ROOT / "tools" / "versions.py")
versions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(versions)

#: what an environment has that no lock lists: the project itself (editable) and the venv's bootstrap
NOT_LOCKED = {"aigc-lab"}


@pytest.fixture(scope="module")
def lock() -> dict[str, str]:
    return versions.read_lock(ROOT / "constraints.txt")


def test_the_lock_pins_the_engine_and_the_cpu_torch(lock):
    assert lock["torch"].startswith("2.13.0")
    for name in ("transformers", "tokenizers", "peft", "accelerate", "jupyterlab", "hatchling", "nbval",
                 "playwright", "numpy", "huggingface-hub"):  # direct, build and transitive
        assert name in lock, name


def test_this_environment_is_the_lock(lock):
    """Every package installed here (`make setup`'s .venv) is in the lock, at the lock's version."""
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.fail(f"run from the project's .venv (make test does), not {sys.prefix}: this test checks that venv")
    have = versions.installed()
    unlocked = sorted(set(have) - set(lock) - NOT_LOCKED - {"pip"})
    assert not unlocked, f"installed without the lock (add them to pyproject.toml, then make lock): {unlocked}"
    moved = [line for line in versions.moved(lock, have) if line.split(":")[0] in have]
    moved = [line for line in moved if line.split(":")[0] not in NOT_LOCKED | {"pip"}]
    assert not moved, moved


def test_the_readme_names_the_locked_versions(lock):
    readme = (ROOT / "README.md").read_text()
    assert versions.readme_block(lock) in readme, "README's tested-versions line is stale: run make lock"
    assert f"transformers {lock['transformers']}" in readme


def test_moved_ignores_local_build_tags_and_reports_both_sides():
    lock = {"torch": "2.13.0", "transformers": "5.23.0", "gone": "1.0"}
    have = {"torch": "2.13.0+cpu", "transformers": "5.24.0", "new": "0.1"}
    assert versions.moved(lock, have) == ["gone: 1.0 -> (not installed)", "new: (not in the lock) -> 0.1",
                                          "transformers: 5.23.0 -> 5.24.0"]


def test_lower_pins_come_from_pyproject(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["transformers>=5.4", "tokenizers>=0.22,<1", "Safetensors>=0.4.3",'
                         ' "peft >= 0.18", "accelerate>=1.0", "numpy"]\n')
    assert versions.lower_pins(pyproject) == ["transformers==5.4", "tokenizers==0.22", "safetensors==0.4.3",
                                              "peft==0.18", "accelerate==1.0"]
    pyproject.write_text('[project]\ndependencies = ["transformers"]\n')
    with pytest.raises(SystemExit, match="no lower bound for transformers"):
        versions.lower_pins(pyproject)
