"""The one-way flow of imports: the router never imports the pixel pipeline.

DESIGN.md: client → router → sidecar → pipeline → native, and "the router
never touches pixels, and does not import the pipeline". These tests read
the import statements of every module of a package (its AST, so a lazy
import inside a function counts too) and resolve relative imports.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pyimgopt

PKG = pathlib.Path(pyimgopt.__file__).parent


def _imports(folder: pathlib.Path, package: str) -> dict[str, set[str]]:
    """Every module each file of ``folder`` (the package ``package``) imports, absolute names."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                names.add(mod)
                names.update(f"{mod}.{alias.name}" for alias in node.names)
        found[path.name] = names
    return found


def test_layers_router_imports_nothing_from_the_pipeline():
    imports = _imports(PKG / "router", "pyimgopt.router")
    assert "inline.py" in imports and "checks.py" in imports  # the walk found the modules
    bad = {name: sorted(m for m in mods if m == "pyimgopt.pipeline" or m.startswith("pyimgopt.pipeline."))
           for name, mods in imports.items()}
    assert {k: v for k, v in bad.items() if v} == {}


def test_layers_importing_the_router_loads_no_pipeline_module():
    """What the AST walk cannot see: a package ``__init__`` on the way in (``pyimgopt``'s
    own) importing the pipeline. A fresh interpreter imports the router and lists every
    ``pyimgopt.pipeline`` module then loaded (~0.5 s)."""
    code = ("import sys, pyimgopt.router, pyimgopt.router.dask_executor; "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] == ['pyimgopt', 'pipeline']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_layers_client_ui_and_command_line_load_neither_pipeline_nor_numpy():
    """A program that drives a pool — the client, the web UI, the command line — plans
    batches with :mod:`pyimgopt.formats` and loads no pixel code: the pipeline, NumPy and
    Pillow load in the sidecars (and the command line's zygote starts before any of it)."""
    code = ("import sys, pyimgopt, pyimgopt.client, pyimgopt.ui.server, pyimgopt.cli, pyimgopt.router; "
            "pyimgopt.router.Router; "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] == ['pyimgopt', 'pipeline'] "
            "or m.split('.')[0] in ('numpy', 'PIL')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_layers_public_api_still_offers_the_pipeline_entry_points():
    import pyimgopt as p
    from pyimgopt import optimize_bytes, optimize_file
    from pyimgopt.pipeline import optimize_bytes as ob, optimize_file as of

    assert optimize_file is of and optimize_bytes is ob and p.optimize_file is of
    assert set(p.__all__) >= {"optimize_file", "optimize_bytes"}


def test_layers_file_safety_layer_imports_neither_router_nor_pipeline():
    mods = _imports(PKG, "pyimgopt")["files.py"]
    assert not [m for m in mods if m.startswith(("pyimgopt.pipeline", "pyimgopt.router"))]


def test_layers_old_names_still_import():
    from pyimgopt import files
    from pyimgopt.pipeline import write
    from pyimgopt.pipeline.encode import EXTENSIONS

    assert write.atomic_write is files.atomic_write and write.read_input is files.read_input
    assert EXTENSIONS is files.EXTENSIONS and EXTENSIONS["jpeg"] == ".jpg"


def test_layers_the_web_ui_never_opens_the_journal():
    """Issue 18: the web UI reads batch state through the client (``status``, ``jobs``,
    ``attach``); the router owns the journal."""
    imports = _imports(PKG / "ui", "pyimgopt.ui")
    assert "session.py" in imports and "recover.py" in imports  # the walk found the modules
    bad = {name: sorted(m for m in mods if m == "pyimgopt.journal" or m.startswith("pyimgopt.journal."))
           for name, mods in imports.items()}
    assert {k: v for k, v in bad.items() if v} == {}
