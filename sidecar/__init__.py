"""The sidecar: pyimgopt's worker process (``python -m pyimgopt_sidecar``).

Owns the job loop that runs :mod:`pyimgopt.pipeline` on jobs dispatched by the
router over ZeroMQ, heartbeats, progress and structured errors (see
DESIGN.md § The wire). The repository keeps it in ``sidecar/``; it is
installed as the package ``pyimgopt_sidecar`` (never as a top-level
``sidecar``, a name another PyPI project owns).
"""
