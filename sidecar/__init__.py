"""The sidecar: pyimgopt's worker process (``python -m sidecar``).

Owns the job loop that runs :mod:`pyimgopt.pipeline` on jobs dispatched by the
router over ZeroMQ, heartbeats, progress and structured errors (see
DESIGN.md § The wire). Until the pool lands, pipelines run in-process
(``pyimgopt optimize`` uses threads); this package holds the place in the
layout so the import direction client → router → sidecar → pipeline is fixed
from the start.
"""
