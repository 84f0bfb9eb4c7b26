"""Run cases each in a forked child of this fresh interpreter; report how each child ended.

Used by ``tests/test_native_isolation.py`` as ``python tests/fork_cases.py`` with a
pickled list of cases on stdin; prints one JSON object per case. The children
are forked from this small, fresh process rather than from pytest because a
process that has already used oxipng owns a rayon thread pool, and a forked
child of it that calls oxipng again spins forever waiting for pool threads
that were not copied into it.

Cases: ``("optimize", data, settings)`` runs ``optimize_bytes`` and reports the
status, or the error code of a :class:`PyimgoptError`; ``("mozjpeg", data)``
calls mozjpeg's lossless optimisation directly, with no isolation. A child
that does not end within ``ALARM`` seconds is killed by ``SIGALRM``.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys

ALARM = 60


def _run(case) -> bytes:
    kind = case[0]
    if kind == "mozjpeg":
        import mozjpeg_lossless_optimization as mz

        mz.optimize(case[1], copy=mz.COPY_MARKERS.ALL)
        return b"returned"
    from pyimgopt import optimize_bytes
    from pyimgopt.errors import PyimgoptError

    try:
        _, res = optimize_bytes(case[1], case[2])
        return "|".join([res.status, *res.notes]).encode()
    except PyimgoptError as exc:
        if exc.code == "internal":
            raise
        return exc.code.encode()


def _one(case) -> dict:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(ALARM)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            said = memoryview(_run(case))
            while said:
                said = said[os.write(w, said):]
        except BaseException as exc:
            os.write(w, f"raised {type(exc).__name__}: {exc}".encode()[:2000])
            code = 4
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        how = f"killed by signal {os.WTERMSIG(status)}"
    else:
        how = f"exit status {os.WEXITSTATUS(status)}"
    return {"ok": os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "how": how,
            "said": b"".join(chunks).decode(errors="replace")}


def main() -> None:
    cases = pickle.load(sys.stdin.buffer)
    for case in cases:
        print(json.dumps(_one(case)), flush=True)


if __name__ == "__main__":
    main()
