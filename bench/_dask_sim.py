"""The simulated job of ``bench_dask.py``: sleep for a measured job time, touch no pixels.

Owns :func:`sleep_job`, submitted in place of
``pyimgopt_sidecar.dask_task.run_job`` (same arguments, same reply shape,
the same events on Dask's event stream: ``start``, then by path the
``outcome``) to a ``dask worker --nthreads 64`` whose ``PYTHONPATH`` holds
``bench/``; the sleep length comes from ``PYIMGOPT_SIM_JOB_S``.
"""

from __future__ import annotations

import os
import time

from pyimgopt_sidecar.dask_task import _tell

__all__ = ["sleep_job"]


def sleep_job(spec: dict, data: bytes | None = None) -> dict:
    """Sleep ``PYIMGOPT_SIM_JOB_S`` seconds; answer like a job that kept its input."""
    _tell(spec, "start")
    time.sleep(float(os.environ.get("PYIMGOPT_SIM_JOB_S", "0.01")))
    reply = {"result": {"input": spec.get("input"), "output": spec.get("output"), "status": "skipped",
                        "bytes_in": 68, "bytes_out": 68, "format_in": "png", "format_out": "png"}}
    if data is None:
        _tell(spec, "outcome", reply=reply)
    return reply
