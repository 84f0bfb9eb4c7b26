"""The wheel, installed for real (not editable) into a throwaway venv.

It must not install a top-level ``sidecar`` package (an unrelated PyPI
project owns that name): the repository's ``sidecar/`` folder installs as
``pyimgopt_sidecar``, and the pool the installed router starts runs
``python -m pyimgopt_sidecar``. Built without the C extension
(``PYIMGOPT_PURE=1``: the layout is what is tested) and installed without
dependencies, which come from this venv through a path entry (its ``.pth``
files, among them the editable install's finder, are not processed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "PYIMGOPT_PURE": "1"}
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"),
                            REPO], capture_output=True, text=True, env=env, timeout=240)
    if built.returncode != 0:
        pytest.skip(f"cannot build the wheel here (no build dependencies?): {built.stderr[-400:]}")
    (wheel,) = (root / "dist").glob("*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True, timeout=120)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "_pyimgopt_test_deps.pth"), "w") as fh:
        fh.write(sysconfig.get_paths()["purelib"] + "\n")
    return wheel, py


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_packaging_wheel_installs_pyimgopt_sidecar_and_no_top_level_sidecar(installed, tmp_path):
    wheel, py = installed
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert "sidecar" not in tops
    assert {"pyimgopt", "pyimgopt_sidecar"} <= tops
    script = textwrap.dedent(
        """
        import importlib.util, os, sys
        from PIL import Image
        import pyimgopt, pyimgopt_sidecar
        from pyimgopt import Settings
        from pyimgopt.client import Client
        assert importlib.util.find_spec("sidecar") is None, "a top-level sidecar package is installed"
        here = os.path.dirname(pyimgopt_sidecar.__file__)
        assert here.startswith(sys.prefix), (here, sys.prefix)  # the installed copy, not the repository
        Image.new("RGB", (64, 48), (10, 200, 30)).save("in.png")
        from pyimgopt.router import RouterConfig
        # warm (a sidecar forked by the zygote shows the zygote's command line) and plain starts
        for warm, module in ((True, b"pyimgopt_sidecar.zygote"), (False, b"pyimgopt_sidecar")):
            with Client.local(workers=1, config=RouterConfig(warm_start=warm)) as c:
                results = c.submit(["in.png"], Settings(), out_dir=f"out-{warm}").wait(120)
                status = c.status()
                (sc,) = [s for s in status["sidecars"] if not s["local"]]
                with open(f"/proc/{sc['pid']}/cmdline", "rb") as fh:  # read while the pool runs
                    argv = fh.read().split(b"\\0")
            assert [r.status for r in results] in (["optimized"], ["skipped"]), results
            assert status["degraded"] is None, status["degraded"]
            assert argv[0].startswith(sys.prefix.encode()) and argv[1:3] == [b"-m", module], argv
        print("ok")
        """
    )
    run = subprocess.run([str(py), "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ok")
    help_ = subprocess.run([str(py), "-m", "pyimgopt_sidecar", "--help"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "python -m pyimgopt_sidecar" in help_.stdout
