"""The Python lock's helpers for the Makefile: what moved, what the README says, what the lower bounds are.

    python tools/versions.py moved LOCK            # installed (this interpreter) vs LOCK: what moved, a line each
    python tools/versions.py readme LOCK README    # rewrite the README's "Tested with" block from LOCK
    python tools/versions.py lower PYPROJECT       # pins at pyproject's lower bounds (for the lower-bound lock)

Stdlib only: it runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

#: the direct dependencies the README names, in this order (the rest of the lock is transitive)
README_PACKAGES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "safetensors", "jupyterlab",
                   "ipywidgets", "ipykernel", "comm", "nbval", "pytest", "playwright")
#: the packages whose lower bounds CI runs the engine on (`make test-lower`)
LOWER_BOUND_PACKAGES = ("transformers", "tokenizers", "safetensors", "peft", "accelerate")
BEGIN, END = "<!-- tested-versions:begin (make lock writes this) -->", "<!-- tested-versions:end -->"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def canonical(name: str) -> str:
    """PEP 503 name: ``Jupyter_Server`` and ``jupyter-server`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str | Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a pip-compile output."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    """``name -> version`` of every distribution installed in this environment's site-packages (not the
    copies other packages vendor and put on ``sys.path``, such as setuptools' ``_vendor``)."""
    import site

    paths = [*site.getsitepackages(), site.getusersitepackages()] if site.ENABLE_USER_SITE else site.getsitepackages()
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions(path=paths) if d.metadata["Name"]}


def moved(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    """One line per package whose installed version differs from the lock, or that only one side has."""
    lines = []
    for name in sorted(set(lock) | set(have)):
        old, new = lock.get(name), have.get(name)
        if old != new and not (old and new and new.split("+")[0] == old.split("+")[0]):
            lines.append(f"{name}: {old or '(not in the lock)'} -> {new or '(not installed)'}")
    return lines


def readme_block(lock: dict[str, str]) -> str:
    """The README's tested-versions block, from the lock."""
    listed = ", ".join(f"{name} {lock[name]}" for name in README_PACKAGES if name in lock)
    return (f"{BEGIN}\nTested with (from `constraints.txt`, the lock every install uses; {len(lock)} packages "
            f"pinned in all): {listed}.\n{END}")


def rewrite_readme(readme: str, lock: dict[str, str]) -> str:
    """``readme`` with its tested-versions block replaced (it must have one)."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"the README has no block between {BEGIN!r} and {END!r}")
    return readme[:start] + readme_block(lock) + readme[end + len(END):]


def lower_pins(pyproject: str | Path) -> list[str]:
    """``name==X`` for each of LOWER_BOUND_PACKAGES, X being the ``>=X`` bound pyproject declares."""
    import tomllib  # Python 3.11+: `make lock` runs it with the venv's 3.11

    deps = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    bounds = {}
    for dep in deps:
        m = re.match(r"^([A-Za-z0-9._-]+)\s*>=\s*([0-9][^,;\s]*)", dep)
        if m:
            bounds[canonical(m.group(1))] = m.group(2)
    missing = [p for p in LOWER_BOUND_PACKAGES if p not in bounds]
    if missing:
        raise SystemExit(f"pyproject.toml declares no lower bound for {', '.join(missing)}")
    return [f"{p}=={bounds[p]}" for p in LOWER_BOUND_PACKAGES]


def main(argv: list[str]) -> int:
    cmd, *args = argv or ["help"]
    if cmd == "moved" and len(args) == 1:
        # what this environment would change: versions that differ and packages the lock lacks (the project
        # itself, the venv's own pip and the lock's dev-only tools are not moves)
        have = {k: v for k, v in installed().items() if k not in ("aigc-lab", "pip")}
        lines = [line for line in moved(read_lock(args[0]), have) if not line.endswith("(not installed)")]
        print("\n".join(lines) if lines else f"nothing moved: every installed package is at its {args[0]} version")
    elif cmd == "readme" and len(args) == 2:
        readme = Path(args[1])
        readme.write_text(rewrite_readme(readme.read_text(), read_lock(args[0])))
    elif cmd == "lower" and len(args) == 1:
        print("\n".join(lower_pins(args[0])))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
