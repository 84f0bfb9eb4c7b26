"""How much memory a job will need, estimated by the sidecar from the image's header.

Owns the estimate: decoded pixels several times over (decode, convert,
resize, encoder buffers) for the first frame, two copies per further frame
of an animation (every frame is decoded and re-encoded), plus the input
itself and a fixed base. Reading the header is parsing hostile bytes, so it
happens here, in the sidecar, under its resource limits — never in the
router, which only reserves what the sidecar reports. A pool sidecar takes
the header the pipeline has just probed (:func:`estimate_from_probe`, through
the pipeline's ``admit`` hook), so nothing is read or parsed twice.
"""

from __future__ import annotations

from pyimgopt.errors import PyimgoptError
from pyimgopt.pipeline.probe import probe
from pyimgopt.settings import Settings

__all__ = ["estimate_job_memory", "estimate_from_probe", "BASE"]

#: Fixed cost of any job (interpreter, codec state).
BASE = 32 * 1024 * 1024


def estimate_from_probe(pr, nbytes: int) -> int:
    """Peak bytes to optimise an image whose header gave ``pr`` (a
    :class:`~pyimgopt.pipeline.probe.Probe`) and whose file holds ``nbytes``."""
    pixels = int(pr.width) * int(pr.height)
    frames = max(1, int(pr.frames))
    return BASE + nbytes + pixels * 4 * (5 + 2 * (frames - 1))


def estimate_job_memory(data: bytes, settings: Settings) -> int | None:
    """Peak bytes to optimise the image in ``data``, or None when its header is refused.

    A header the pipeline would refuse (corrupt, unsupported, over the
    limits) gets None: the job then fails at once in the pipeline, with the
    typed error, and needs no memory worth reserving.
    """
    try:
        pr = probe(data, settings)
    except PyimgoptError:
        return None
    except Exception:  # a header no decoder expected: the pipeline reports it
        return None
    return estimate_from_probe(pr, len(data))
