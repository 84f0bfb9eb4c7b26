"""The command line: ``pyimgopt optimize``, ``watch``, ``ui``, ``router`` … — what a person types.

Owns argument parsing, turning PATH arguments into (input, output) pairs
(folders recurse, outputs mirror the tree under ``--out``), running the
pipeline over them on a few threads, the progress bar, the human summary and
the ``--json`` lines (a dry run's per-file "would write" lines too), the
``manifest`` command (where the optimisation manifest lives, clearing it),
and the exit code: 0 when no file failed, 1 when any did, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import __version__
from .errors import InvalidSettingsError, PyimgoptError
from .result import STATUSES, Result
from .settings import AUTO_FORMATS, BROWSER_FORMATS, FILTERS, FITS, OUTPUT_FORMATS, Settings

__all__ = ["main"]

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyimgopt", description="Make images smaller, fast, without losing a file."
    )
    p.add_argument("--version", action="version", version=f"pyimgopt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    o = sub.add_parser("optimize", help="optimise files and folders")
    o.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (folders recurse)")
    dest = o.add_mutually_exclusive_group(required=True)
    dest.add_argument("-o", "--out", metavar="DIR", help="write outputs under DIR, mirroring PATH")
    dest.add_argument("--in-place", action="store_true", help="replace inputs atomically (never larger)")
    _image_options(o)
    o.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    o.add_argument("--dry-run", action="store_true",
                   help="run everything, write nothing: report per file and in total what would "
                        "be written (bytes, format, SSIM)")
    w = sub.add_parser("watch", help="optimise new and changed files of a folder as they arrive")
    w.add_argument("folder", metavar="FOLDER", help="the folder to watch (recursively)")
    wdest = w.add_mutually_exclusive_group(required=True)
    wdest.add_argument("-o", "--out", metavar="DIR", help="write outputs under DIR, mirroring FOLDER")
    wdest.add_argument("--in-place", action="store_true", help="replace files atomically (never larger)")
    _image_options(w, watching=True)
    w.add_argument("--settle", type=float, default=1.0, metavar="S",
                   help="seconds a file's size and mtime must stay the same before it is read "
                        "(default 1.0)")
    w.add_argument("--once", action="store_true",
                   help="catch up on what changed while not watching, then exit")
    m = sub.add_parser("manifest", help="the optimisation manifest: where it is, what it holds, clear it")
    m.add_argument("action", choices=("path", "show", "clear"),
                   help="path: print its file; show: count and newest entries; clear: forget entries")
    m.add_argument("--state-dir", metavar="DIR", default=None)
    m.add_argument("--manifest", metavar="FILE", default=None, help="a manifest elsewhere")
    m.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                   help="clear: only entries last written more than DAYS ago")
    m.add_argument("--under", metavar="DIR", default=None,
                   help="clear: only entries whose input or output lies under DIR")
    m.add_argument("--json", action="store_true")
    r = sub.add_parser("router", help="run a router (and its local pool) until interrupted")
    r.add_argument("--bind", required=True, metavar="ENDPOINT", help="endpoint for clients")
    r.add_argument("--sidecar-bind", metavar="ENDPOINT",
                   help="endpoint for sidecars (default: ipc in a private 0700 folder)")
    r.add_argument("-j", "--workers", type=int, default=None, metavar="N",
                   help="local pool size (default: usable CPUs; 0 = in-process)")
    r.add_argument("--executor", metavar="SPEC", default=None,
                   help="where jobs run: local (the sidecar pool, default) or dask://HOST:PORT "
                        "(a Dask scheduler; add ?files=shared when every worker sees these files "
                        "under the same paths, else workers get image bytes); needs pyimgopt[dask]")
    r.add_argument("--curve-secret", metavar="FILE", help="router's secret key (required for tcp://)")
    r.add_argument("--authorized-clients", action="append", default=[], metavar="DIR",
                   help="folder of client public keys admitted (repeatable)")
    r.add_argument("--authorized-sidecars", action="append", default=[], metavar="DIR",
                   help="folder of sidecar public keys admitted (repeatable)")
    r.add_argument("--policies", metavar="FILE",
                   help='JSON: {"local": POLICY, "insecure": POLICY, '
                        '"clients": {KEY_ID or KEY_FILE: POLICY}}')
    r.add_argument("--insecure-loopback", action="store_true",
                   help="allow tcp://127.0.0.1 without CurveZMQ (testing only): such clients get "
                        'the "insecure" policy (default: nothing), and no sidecar may register')
    sc = sub.add_parser("sidecar", help="run one sidecar worker (same options as python -m pyimgopt_sidecar)")
    sc.add_argument("args", nargs=argparse.REMAINDER, help="--connect ENDPOINT [...]")
    r.add_argument("--state-dir", metavar="DIR", default=None, help="journal folder")
    r.add_argument("--metrics-port", type=int, default=None, metavar="P",
                   help="serve Prometheus /metrics on 127.0.0.1:P")
    r.add_argument("--log-json", action="store_true", help="JSON log lines on stderr")
    rs = sub.add_parser("resume", help="finish a batch that was interrupted")
    rs.add_argument("batch", metavar="BATCH_ID")
    rs.add_argument("--state-dir", metavar="DIR", default=None)
    rs.add_argument("-j", "--workers", type=int, default=None, metavar="N")
    rs.add_argument("--connect", metavar="ENDPOINT", help="a running router holding the batch")
    rs.add_argument("--executor", metavar="SPEC", default=None,
                    help="where the rest runs: local (default) or dask://HOST:PORT[?files=shared]")
    rs.add_argument("--manifest", metavar="FILE", default=None,
                    help="the optimisation manifest (default: manifest.sqlite3 in the state folder)")
    rs.add_argument("--json", action="store_true")
    rs.add_argument("--no-progress", action="store_true")
    st = sub.add_parser("status", help="list batches and their progress")
    st.add_argument("--batch", metavar="ID")
    st.add_argument("--state-dir", metavar="DIR", default=None)
    st.add_argument("--json", action="store_true")
    u = sub.add_parser("ui", help="serve the web UI on 127.0.0.1 (prints the URL with its token)")
    u.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0 = any free port; default 8765)")
    u.add_argument("--root", action="append", default=[], metavar="DIR",
                   help="folder the UI may read and write (repeatable; default: the current folder)")
    u.add_argument("--no-in-place", action="store_true", help="never replace inputs in place")
    u.add_argument("--open", action="store_true", help="open the page in the default browser")
    u.add_argument("-j", "--workers", type=int, default=None, metavar="N", help="sidecar processes")
    u.add_argument("--state-dir", metavar="DIR", default=None,
                   help="journal folder (default: ui/ in the user state dir); a restart resumes its batch")
    k = sub.add_parser("keys", help="CurveZMQ key pairs: keys generate DIR NAME | keys show FILE")
    k.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _image_options(o: argparse.ArgumentParser, watching: bool = False) -> None:
    """The options ``optimize`` and ``watch`` share (what to do to each image, where state lives)."""
    o.add_argument("--format", choices=OUTPUT_FORMATS, default="keep")
    o.add_argument("-q", "--quality", type=int, metavar="N", help="1-100 (lossy formats)")
    o.add_argument("--target-ssim", type=float, metavar="T",
                   help="search the quality for the smallest output with SSIM >= T (e.g. 0.985); "
                        "colour is checked too")
    o.add_argument("--target-size", metavar="SIZE",
                   help="largest quality (then, within --min-scale, the least downscale) whose "
                        "output fits SIZE: 200KB or 1.5MB (KB/MB = 1000/1000000 bytes), 200KiB or "
                        "1.5MiB (1024-based), or bytes; a file that cannot fit fails alone "
                        "(target_unreachable)")
    o.add_argument("--min-scale", type=float, metavar="S",
                   help="with --target-size: shrink the image down to S (0-1] of its size when "
                        "the lowest quality does not fit (default: never shrink for size)")
    o.add_argument("--lossless", action="store_true",
                   help="lossless WebP/AVIF/JPEG XL (a JPEG to --format jxl is recompressed, "
                        "not decoded, and rebuildable byte for byte)")
    o.add_argument("--formats-allowed", metavar="LIST", default=None,
                   help="formats --format auto may choose, comma-separated, among "
                        f"{','.join(AUTO_FORMATS)} (default: {','.join(BROWSER_FORMATS)})")
    o.add_argument("--max-width", type=int, metavar="W")
    o.add_argument("--max-height", type=int, metavar="H")
    o.add_argument("--fit", choices=FITS, default="inside")
    o.add_argument("--enlarge", action="store_true", help="allow upscaling")
    o.add_argument("--filter", choices=FILTERS, default="lanczos3")
    o.add_argument("--keep-metadata", action="store_true", help="keep EXIF and an sRGB ICC profile")
    o.add_argument("--first-frame", action="store_true",
                   help="take the first frame of animations the output format cannot hold")
    o.add_argument("--allow-larger", action="store_true",
                   help="write re-encoded results even when not smaller")
    o.add_argument("--effort", type=int, default=6, metavar="0-9")
    o.add_argument("--max-pixels", type=int, default=Settings.max_pixels, metavar="N")
    o.add_argument("--mark", action="store_true",
                   help="write a ~50-byte marker into optimised PNG/JPEG/GIF files so a re-run "
                        "recognises them even after a copy (see the manifest)")
    o.add_argument("--force", action="store_true",
                   help="redo every file, whatever the manifest or a marker says")
    o.add_argument("--manifest", metavar="FILE", default=None,
                   help="the optimisation manifest (default: manifest.sqlite3 in the state folder)")
    o.add_argument("-j", "--workers", type=int, default=None, metavar="N",
                   help="sidecar processes (default: the CPUs this process may use; 0 = in-process)")
    if not watching:
        o.add_argument("--connect", metavar="ENDPOINT",
                       help="use a running router instead of a local pool")
        o.add_argument("--executor", metavar="SPEC", default=None,
                       help="where jobs run: local (the sidecar pool, default) or dask://HOST:PORT "
                            "(a Dask scheduler; add ?files=shared when every worker sees these files "
                            "under the same paths, else workers get image bytes); needs pyimgopt[dask]")
    o.add_argument("--state-dir", metavar="DIR", default=None,
                   help="journal folder (default: $PYIMGOPT_STATE_DIR or the user state dir)")
    o.add_argument("--json", action="store_true", help="one JSON object per file, then a summary")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")


def _settings(a: argparse.Namespace) -> Settings:
    return Settings(
        format=a.format,
        quality=a.quality,
        target_ssim=a.target_ssim,
        lossless=True if a.lossless else None,
        max_width=a.max_width,
        max_height=a.max_height,
        fit=a.fit,
        enlarge=a.enlarge,
        filter=a.filter,
        keep_metadata=a.keep_metadata,
        first_frame=a.first_frame,
        allow_larger=a.allow_larger,
        effort=a.effort,
        max_pixels=a.max_pixels,
        target_size=getattr(a, "target_size", None),
        min_scale=getattr(a, "min_scale", None),
        mark=bool(getattr(a, "mark", False)),
        **({} if getattr(a, "formats_allowed", None) is None else
           {"formats_allowed": [f.strip() for f in a.formats_allowed.split(",") if f.strip()]}),
    )


def _state_dir(arg: str | None) -> str:
    from .journal import default_state_dir

    return arg or os.environ.get("PYIMGOPT_STATE_DIR") or default_state_dir()


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


class _Progress:
    """A rich progress bar on a terminal, nothing otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = None
        if enabled and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._bar = Progress(
                "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), transient=True,
                console=__import__("rich.console").console.Console(stderr=True),
            )
            self._bar.start()
            self._task = self._bar.add_task("optimising", total=total)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _optimize(a: argparse.Namespace) -> int:
    try:
        s = _settings(a)
    except InvalidSettingsError as exc:
        print(f"pyimgopt: error: {exc.message}", file=sys.stderr)
        return 2
    if a.in_place and s.format not in ("keep", "auto"):
        print("pyimgopt: error: --in-place keeps each file's format; use --out DIR to convert",
              file=sys.stderr)
        return 2
    if a.workers is not None and a.workers < 0:
        print(f"pyimgopt: error: Expected an integer >= 0 for --workers but received {a.workers}",
              file=sys.stderr)
        return 2
    if _bad_executor(a):
        return 2
    if not a.connect and getattr(a, "executor", None) in (None, "local") and a.workers != 0:
        from .router.zygote import prestart

        prestart()  # the pool's zygote imports the pipeline while this process sets up
    from .client import Client

    start = time.perf_counter()
    rep = _Report(a.json, bool(getattr(a, "dry_run", False)))
    report = rep.result

    try:
        if a.connect:
            client = Client.connect(a.connect)
        else:
            client = _local_client(a)
    except PyimgoptError as exc:
        print(f"pyimgopt: error: {exc.message}", file=sys.stderr)
        return 1
    if client is None:
        return 1
    progress = None
    try:
        with client:
            if getattr(a, "resume_batch", None):
                batch = client.attach(a.resume_batch)
            else:
                batch = client.submit(a.paths, s, out_dir=a.out, in_place=a.in_place,
                                      priority=a.priority, force=a.force, dry_run=a.dry_run)
            if a.json:
                sys.stdout.write(json.dumps({"type": "batch", "id": batch.id, "files": batch.total}) + "\n")
                sys.stdout.flush()
            else:
                print(f"pyimgopt: batch {batch.id}: {batch.total} files "
                      f"(if interrupted: pyimgopt resume {batch.id})", file=sys.stderr)
            progress = _Progress(batch.total, not a.no_progress and sys.stderr.isatty())
            for ev in batch.events():
                if ev.kind in ("result", "failed"):
                    report(ev.result)
                    progress.advance()
                elif ev.kind == "degraded" and not a.json:
                    print(f"pyimgopt: note: {ev.data.get('reason')}", file=sys.stderr)
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        print("pyimgopt: interrupted; finished files are written, nothing is half-written",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of --json went away (`| head`): stop like an interrupt,
        # quietly, and keep Python from failing again on its final flush
        if progress is not None:
            progress.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("pyimgopt: output closed; stopped; finished files are written, nothing is "
              "half-written", file=sys.stderr)
        return 141
    except PyimgoptError as exc:
        if progress is not None:
            progress.close()
        print(f"pyimgopt: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    progress.close()
    rep.summary(time.perf_counter() - start)
    return 1 if rep.counts["failed"] else 0


class _Report:
    """Per-file lines and the closing summary of ``optimize``, ``resume`` and ``watch``."""

    def __init__(self, as_json: bool, dry_run: bool = False) -> None:
        self.json = as_json
        self.dry_run = dry_run
        self.counts = {status: 0 for status in STATUSES}
        self.bytes_in = self.bytes_out = 0

    def result(self, r: Result) -> None:
        self.counts[r.status] += 1
        self.dry_run = self.dry_run or r.dry_run
        # an ``unchanged`` file was written by an earlier run: this run saved nothing on it
        if r.ok and r.status != "unchanged" and r.bytes_in is not None and r.bytes_out is not None:
            self.bytes_in += r.bytes_in
            self.bytes_out += r.bytes_out
        if self.json:
            sys.stdout.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif r.error is not None:
            print(f"FAILED {r.input}: {r.error.code}: {r.error.message}", file=sys.stderr)
        elif r.dry_run:
            ssim = "" if r.ssim is None else f", SSIM {r.ssim:.4f}"
            verb = {"optimized": "would write", "skipped": "would keep (not smaller)",
                    "unchanged": "unchanged"}[r.status]
            print(f"{verb} {r.output}: {(r.format_out or '?').upper()} {r.bytes_out:,} B "
                  f"(from {r.bytes_in:,} B){ssim}")

    def summary(self, seconds: float) -> None:
        c = self.counts
        files = sum(c.values())
        if self.json:
            sys.stdout.write(json.dumps({"type": "summary", "files": files, **c, "bytes_in": self.bytes_in,
                                         "bytes_out": self.bytes_out, "dry_run": self.dry_run,
                                         "seconds": round(seconds, 3)}) + "\n")
            return
        saved = self.bytes_in - self.bytes_out
        pct = 100.0 * saved / self.bytes_in if self.bytes_in else 0.0
        would = "dry run, nothing written: " if self.dry_run else ""
        print(f"pyimgopt: {would}{files} files: {c['optimized']} optimized, {c['skipped']} skipped, "
              f"{c['unchanged']} unchanged, {c['failed']} failed; {_human(self.bytes_in)} -> "
              f"{_human(self.bytes_out)} ({'would save' if self.dry_run else 'saved'} "
              f"{_human(saved)}, {pct:.1f}%) in {seconds:.1f} s")


def _bad_executor(a: argparse.Namespace) -> bool:
    """Say what is wrong with ``--executor`` (and True) before anything starts."""
    spec = getattr(a, "executor", None)
    if spec is None:
        return False
    if getattr(a, "connect", None):
        print("pyimgopt: error: --executor is the router's choice: give it to 'pyimgopt router', "
              "not with --connect", file=sys.stderr)
        return True
    from .router.executors import DASK_INSTALL_HINT, parse_executor

    try:
        kind = parse_executor(spec).kind
    except InvalidSettingsError as exc:
        print(f"pyimgopt: error: {exc.message}", file=sys.stderr)
        return True
    if kind == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            print(f"pyimgopt: error: --executor {spec} needs Dask distributed: {DASK_INSTALL_HINT}",
                  file=sys.stderr)
            return True
    return False


def _local_client(a: argparse.Namespace):
    """The private router (and pool) of one ``optimize`` or ``resume`` run.

    Its journal is the state folder's, or — while another run owns that one —
    a private one in the folder's ``runs/``; either way it runs only its own
    batch (``recover=False``): a batch another run left is finished by
    ``pyimgopt resume``, never picked up by accident. ``resume`` opens the
    journal that holds its batch; None (after saying why) when it cannot.
    """
    from .client import Client
    from .journal import JournalBusyError, find_batch, holder
    from .router import RouterConfig

    state = _state_dir(getattr(a, "state_dir", None))
    manifest = _manifest_path(a)
    batch = getattr(a, "resume_batch", None)
    if batch is None:
        cfg = RouterConfig(recover=False, private_journal_if_busy=True, manifest=manifest,
                           executor=getattr(a, "executor", None))
        return Client.local(workers=a.workers, config=cfg, state_dir=state)
    folder = find_batch(state, batch)
    if folder is None:
        print(f"pyimgopt: unknown batch {batch} (no journal in {state} holds it)", file=sys.stderr)
        return None
    pid = holder(folder)
    if pid is not None:
        print(f"pyimgopt: batch {batch} belongs to a pyimgopt process that is still running"
              f"{f' (pid {pid})' if pid else ''}; it finishes it, or resume once it has ended",
              file=sys.stderr)
        return None
    try:
        return Client.local(workers=a.workers, config=RouterConfig(recover=False, manifest=manifest,
                                                                   executor=getattr(a, "executor", None)),
                            state_dir=folder)
    except JournalBusyError as exc:
        print(f"pyimgopt: {exc.message}; resume once it has ended", file=sys.stderr)
        return None


def _manifest_path(a: argparse.Namespace) -> str:
    """The manifest a command uses: ``--manifest``, else beside the state folder's journal
    (the same file for every run, the UI and watch on that folder)."""
    from .manifest import MANIFEST_NAME

    return getattr(a, "manifest", None) or os.path.join(_state_dir(getattr(a, "state_dir", None)),
                                                        MANIFEST_NAME)


def _manifest_cmd(a: argparse.Namespace) -> int:
    from .manifest import Manifest

    path = _manifest_path(a)
    if a.action == "path":
        print(path)
        return 0
    if not os.path.exists(path):
        if a.json:
            print(json.dumps({"type": "manifest", "path": path, "entries": 0, "cleared": 0}))
        else:
            print(f"pyimgopt: no manifest at {path} (nothing recorded yet)")
        return 0
    if a.action == "show":
        m = Manifest(path, readonly=True)
        try:
            n, newest = m.count(), m.entries(20)
        finally:
            m.close()
        if a.json:
            print(json.dumps({"type": "manifest", "path": path, "entries": n, "newest": newest}))
        else:
            print(f"{path}: {n} entries")
            for e in newest:
                print(f"  {e['input']} -> {e['output']} ({e['result'].get('format_out')}, "
                      f"{e['result'].get('bytes_out')} B)")
        return 0
    m = Manifest(path)
    try:
        older = None if a.older_than is None else a.older_than * 86400
        n = m.clear(older_than=older, under=a.under)
    finally:
        m.close()
    if a.json:
        print(json.dumps({"type": "manifest", "path": path, "cleared": n}))
    else:
        print(f"pyimgopt: cleared {n} manifest entries from {path}; the next run redoes those files")
    return 0


def _router(a: argparse.Namespace) -> int:
    import signal
    import tempfile

    import zmq

    from .router import Router, RouterConfig

    if _bad_executor(a):
        return 2
    side = a.sidecar_bind
    tmp = None
    if side is None:
        tmp = tempfile.mkdtemp(prefix="pyimgopt-router-")
        os.chmod(tmp, 0o700)
        side = f"ipc://{tmp}/sidecars"
    from .logs import configure

    # Until the banner is out only warnings are logged: a reader of stderr
    # (a supervisor, a test) finds the endpoints on the first line.
    configure(json_lines=True if a.log_json else None, level="WARNING")
    cfg = RouterConfig(
        workers=a.workers,
        executor=a.executor,
        state_dir=_state_dir(a.state_dir),
        metrics_port=a.metrics_port,
        curve_secret=a.curve_secret,
        authorized_clients=a.authorized_clients,
        authorized_sidecars=a.authorized_sidecars,
        insecure_loopback=a.insecure_loopback,
    )
    if a.policies:
        from .auth import key_id, load_public
        from .security import Policy

        with open(a.policies, encoding="utf-8") as fh:
            spec = json.load(fh)
        if "local" in spec:
            cfg.local_policy = Policy.from_dict(spec["local"])
        if "insecure" in spec:
            cfg.insecure_policy = Policy.from_dict(spec["insecure"])
        for who, pol in (spec.get("clients") or {}).items():
            kid = key_id(load_public(who)) if who.endswith((".key", ".key_secret")) else who
            cfg.key_policies[kid] = Policy.from_dict(pol)
    router = Router(a.bind, side, cfg)
    signal.signal(signal.SIGTERM, lambda *_: router.request_stop())
    try:
        router.start()
    except (OSError, ValueError, zmq.ZMQError) as exc:  # PermissionError, JournalBusyError are OSErrors
        print(f"pyimgopt router: error: {exc}", file=sys.stderr)
        return 2
    metrics = ""
    if router.metrics_server is not None:
        metrics = f", metrics http://127.0.0.1:{router.metrics_server.port}/metrics"
    where = "executor" if router.sidecar_endpoint.startswith("dask://") else "sidecars"
    print(f"pyimgopt router: clients {router.client_endpoint}, {where} {router.sidecar_endpoint}"
          f"{metrics}", file=sys.stderr, flush=True)
    configure(json_lines=True if a.log_json else None)
    try:
        while router.is_alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    router.stop()
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    if router.failure is not None:
        print(f"pyimgopt router: error: the router stopped on {type(router.failure).__name__}: "
              f"{router.failure}", file=sys.stderr)
        return 1
    return 0


def _resume(a: argparse.Namespace) -> int:
    a.resume_batch = a.batch
    a.paths, a.out, a.in_place, a.priority = [], None, False, 0
    a.format, a.quality, a.target_ssim, a.lossless = "keep", None, None, False
    a.max_width = a.max_height = None
    a.fit, a.enlarge, a.filter = "inside", False, "lanczos3"
    a.keep_metadata = a.first_frame = a.allow_larger = False
    a.effort, a.max_pixels = 6, Settings.max_pixels
    a.target_size = a.min_scale = None
    a.mark = a.force = a.dry_run = False
    return _optimize(a)


def _status(a: argparse.Namespace) -> int:
    from .journal import Journal, journal_folders

    state = _state_dir(a.state_dir)
    folders = journal_folders(state)
    if not folders:
        print(f"pyimgopt: no journal in {state}", file=sys.stderr)
        return 1
    rows = []
    for folder in folders:  # the state folder's journal, then the private ones of concurrent runs
        j = Journal(folder, readonly=True)
        try:
            rows += [{**r, "journal": folder} for r in j.summary(a.batch)]
        finally:
            j.close()
    rows.sort(key=lambda r: r["created"], reverse=True)
    if a.batch and not rows:
        print(f"pyimgopt: unknown batch {a.batch}", file=sys.stderr)
        return 1
    if a.json:
        for r in rows:
            sys.stdout.write(json.dumps({"type": "batch", **r}) + "\n")
        return 0
    print(f"{'batch':18} {'state':10} {'done':>6} {'failed':>6} {'pending':>7} {'total':>6}")
    for r in rows:
        print(f"{r['id']:18} {r['state']:10} {r['done']:6} {r['failed'] + r['cancelled']:6} "
              f"{r['pending']:7} {r['total']:6}")
    return 0


def _ui(a: argparse.Namespace) -> int:
    from .ui import serve

    roots = a.root or [os.getcwd()]
    for r in roots:
        if not os.path.isdir(r):
            print(f"pyimgopt ui: --root {r}: not a folder", file=sys.stderr)
            return 2

    def ready(url: str) -> None:
        print(f"pyimgopt ui: serving {', '.join(os.path.realpath(r) for r in roots)}", flush=True)
        print(f"open {url}", flush=True)

    from .journal import JournalBusyError

    try:
        # Its own journal by default: a restart shows and resumes the UI's batches only.
        state = a.state_dir or os.path.join(_state_dir(None), "ui")
        serve(roots, port=a.port, workers=a.workers, in_place=not a.no_in_place,
              state_dir=state, open_browser=a.open, on_ready=ready)
    except JournalBusyError as exc:
        print(f"pyimgopt ui: {exc.message} (another pyimgopt ui?); give it --state-dir DIR",
              file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pyimgopt ui: cannot listen on 127.0.0.1:{a.port}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (130 after Ctrl-C, also while it sets up)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("pyimgopt: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("optimize", "resume", "ui"):
        from .logs import configure

        configure(level="WARNING")  # the pool's warnings as readable lines on stderr
    if args.command == "optimize":
        return _optimize(args)
    if args.command == "router":
        return _router(args)
    if args.command == "resume":
        return _resume(args)
    if args.command == "status":
        return _status(args)
    if args.command == "manifest":
        return _manifest_cmd(args)
    if args.command == "watch":
        from .watch import watch_main

        return watch_main(args)
    if args.command == "ui":
        return _ui(args)
    if args.command == "sidecar":
        from pyimgopt_sidecar.__main__ import main as sidecar_main

        return sidecar_main(args.args)
    if args.command == "keys":
        from .auth import keys_main

        return keys_main(args.args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
