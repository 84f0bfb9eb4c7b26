"""Assemble the broad benchmark corpus: real PNGs, JPEGs, WebPs and GIFs from Debian packages.

This corpus is *not* the test corpus (``../shared/corpus``): it exists so that
encoder defaults are measured on images they were not tuned on. It is built
from a fixed list of Debian 12 packages (icon themes, wallpapers, manuals with
screenshots, scientific sample data, games), downloaded with ``apt-get
download`` (nothing is installed) and unpacked with ``dpkg-deb -x`` into a
temporary folder that is deleted package by package. Images are found by
content (magic bytes, then a full Pillow decode), not by file name, and
deduplicated by SHA-256. Nothing here is committed to the repository.

Usage::

    python bench/broad_corpus.py                 # build or complete the corpus
    python bench/broad_corpus.py --dest DIR      # elsewhere (or PYIMGOPT_BROAD_CORPUS=DIR)
    python bench/broad_corpus.py --rebuild       # start again from an empty folder
    python bench/broad_corpus.py --summary       # print what the manifest holds

The corpus lands in ``$PYIMGOPT_BROAD_CORPUS`` or ``~/.cache/pyimgopt/bench-corpus``:
``files/<package>/<sha256[:10]>-<name>``, ``licenses/<package>.copyright``
and ``manifest.json`` (one entry per image: package, version, licence,
category, kind, large, path inside the package, size, bytes, sha256 and
format traits). A package already in the manifest at the pinned version is
not downloaded again; a package whose rules changed is rebuilt alone (an
image it gives up or takes could change what a later package deduplicates
against, so for the exact clean-build selection use ``--rebuild``).

Selection is deterministic. Each package has rules (globs on the path inside
the package, first match wins) giving each image a *kind* — ``icon``,
``screenshot``, ``graphic``, ``photo`` — or excluding it, caps per format so
that no package dominates, and optionally a *group* pattern (one image per
group, e.g. one resolution per wallpaper). Within a package the candidates are
put in strata by (kind, size class, pixel traits: 16-bit, ICC profile,
palette, gray, alpha, interlaced) and taken round-robin over the kinds and,
within a kind, over its strata, each stratum in SHA-256 order, until the cap:
so the selection covers kinds, sizes and traits rather than the first files
of a folder. Screenshots and photos must be at least 48 px a side. Files the test corpus was
made from are excluded (:data:`TEST_CORPUS_SOURCES`).

The *category* an image is reported under follows from format and kind:
PNG ``icon`` / ``screenshot`` / ``graphic`` / ``photo-png``; JPEG
``photo-jpeg`` (photographs) or ``graphic-jpeg`` (screenshots, renders,
textures); ``webp`` and ``gif``. Independently, ``large`` is true for images
of at least 8 megapixels: the benchmarks report a "large" row that counts
such files *again*, beside their own category (totals count each file once).

Package versions are pinned (:data:`PACKAGES` in ``broad_packages.py``, with
the rules; ``broad_facts.py`` says what is recorded of each image); when the archive no longer
serves a pinned version the current one is used, recorded in the manifest,
and a warning is printed (``--strict`` makes that an error).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from PIL import Image

from broad_facts import (  # bench/ is the script's folder
    LARGE_PIXELS,
    facts,
    licence_for,
    png_traits,
    size_class,
    sniff,
    traits,
)
from broad_packages import (
    CATEGORIES,
    MIN_SIDE,
    PACKAGES,
    TEST_CORPUS_SOURCES,
    Package,
    category,
)

DEFAULT_DEST = pathlib.Path.home() / ".cache" / "pyimgopt" / "bench-corpus"
ENV_DEST = "PYIMGOPT_BROAD_CORPUS"
MANIFEST = "manifest.json"
#: A toolbar icon in a manual is no screenshot, nor a 32 px swatch a photo.
KIND_MIN_SIDE = {"screenshot": 48, "photo": 48}
#: Above this the pipeline's default ``max_pixels`` refuses the image anyway.
MAX_PIXELS = 100_000_000

#: Bumped when the selection algorithm changes, so every package is rebuilt.
SELECTION_VERSION = 2

# --------------------------------------------------------------------------- apt


def _run(cmd: list[str], cwd: pathlib.Path | None = None) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return res.stdout


def download(name: str, version: str | None, into: pathlib.Path, strict: bool) -> pathlib.Path:
    """``apt-get download`` one package (the pinned version if the archive has it)."""
    before = set(into.glob("*.deb"))
    try:
        _run(["apt-get", "download", f"{name}={version}" if version else name], cwd=into)
    except RuntimeError as exc:
        if version is None or strict:
            raise
        print(f"  warning: {name}={version} not available ({exc}); taking the current version",
              file=sys.stderr)
        _run(["apt-get", "download", name], cwd=into)
    new = sorted(set(into.glob("*.deb")) - before)
    if len(new) != 1:
        raise RuntimeError(f"apt-get download {name}: expected one new .deb, found {new}")
    return new[0]


def deb_field(deb: pathlib.Path, fld: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), fld]).strip()


def read_copyright(name: str, tree: pathlib.Path, work: pathlib.Path) -> str | None:
    """The package's copyright file; where ``/usr/share/doc/NAME`` is a symlink to
    another package's folder (``gimp-help-en`` → ``gimp-help-common``), that
    package is downloaded too, for its copyright file only."""
    doc = tree / "usr" / "share" / "doc" / name
    if doc.is_symlink():
        owner = os.readlink(doc).rstrip("/").split("/")[-1]
        sub = work / f"copyright-{owner}"
        sub.mkdir()
        try:
            deb = download(owner, None, sub, strict=False)
            _run(["dpkg-deb", "-x", str(deb), str(sub / "x")])
            f = sub / "x" / "usr" / "share" / "doc" / owner / "copyright"
            return f.read_text(errors="replace") if f.is_file() else None
        except RuntimeError as exc:
            print(f"  warning: no copyright file for {name} via {owner}: {exc}", file=sys.stderr)
            return None
        finally:
            shutil.rmtree(sub, ignore_errors=True)
    f = doc / "copyright"
    return f.read_text(errors="replace") if f.is_file() else None


# --------------------------------------------------------------------------- selection


@dataclass
class Candidate:
    path: str  # inside the package
    sha256: str
    data: bytes = field(repr=False)
    facts: dict
    kind: str


def kind_of(pkg: Package, path: str) -> str | None:
    for pattern, kind in pkg.rules:
        if fnmatch.fnmatchcase(path, pattern):
            return kind
    return pkg.kind


def excluded(pkg: str, path: str) -> bool:
    key = f"{pkg}:{path}"
    return any(fnmatch.fnmatchcase(key, g) for g in TEST_CORPUS_SOURCES)


def scan(pkg: Package, tree: pathlib.Path, seen: set[str]) -> list[Candidate]:
    """Every image in the unpacked package that decodes, by content, not yet seen elsewhere."""
    out: list[Candidate] = []
    local: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for fname in sorted(filenames):
            full = pathlib.Path(dirpath) / fname
            if full.is_symlink() or not full.is_file():
                continue
            rel = full.relative_to(tree).as_posix()
            with open(full, "rb") as fh:
                fmt = sniff(fh.read(16))
            if fmt is None or kind_of(pkg, rel) is None or excluded(pkg.name, rel):
                continue
            data = full.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen or digest in local:
                continue
            local.add(digest)
            out.append(Candidate(rel, digest, data, {}, kind_of(pkg, rel) or ""))
    return out


def select(pkg: Package, cands: list[Candidate]) -> list[Candidate]:
    """Stratified, deterministic choice of at most ``pkg.caps[fmt]`` images per format.

    Strata are (kind, size class, trait); strata are visited in a fixed order
    and one image is taken from each in turn (SHA-256 order inside a stratum),
    so a capped package contributes a spread of sizes and traits. An image is
    decoded fully before it is taken; one that does not decode is skipped.
    """
    chosen: list[Candidate] = []
    by_fmt: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        fmt = sniff(c.data[:16]) or "?"
        by_fmt[fmt].append(c)
    for fmt in sorted(by_fmt):
        cap = pkg.caps.get(fmt.lower(), 0)
        if cap <= 0:
            continue
        # Header-level facts for stratifying (cheap); the full decode comes when taken.
        strata: dict[tuple, list[Candidate]] = defaultdict(list)
        for c in by_fmt[fmt]:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    im = Image.open(io.BytesIO(c.data))
                    head = {"width": im.width, "height": im.height, "mode": im.mode,
                            "icc": bool(im.info.get("icc_profile")),
                            "progressive": bool(im.info.get("progressive"))}
            except Exception:
                continue
            if fmt == "PNG":
                head.update(png_traits(c.data))
            least = max(pkg.min_side, KIND_MIN_SIDE.get(c.kind, 0))
            if min(head["width"], head["height"]) < least:
                continue
            if head["width"] * head["height"] > MAX_PIXELS:
                continue
            strata[(c.kind, size_class(head), traits(head))].append(c)
        for members in strata.values():
            members.sort(key=lambda c: c.sha256)
        # Round-robin over kinds, and within a kind over its strata, so that a
        # package's screenshots get as many turns as its many icon strata.
        rotation: dict[str, list[tuple]] = defaultdict(list)
        for key in sorted(strata):
            rotation[key[0]].append(key)
        turn = {kind: 0 for kind in rotation}
        groups: set[str] = set()
        taken = 0
        while taken < cap and any(strata[k] for k in strata):
            for kind in sorted(rotation):
                if taken >= cap:
                    break
                keys = [k for k in rotation[kind] if strata[k]]
                if not keys:
                    continue
                key = keys[turn[kind] % len(keys)]
                turn[kind] += 1
                while strata[key]:
                    c = strata[key].pop(0)
                    g = None
                    if pkg.group:
                        m = re.search(pkg.group, c.path)
                        g = m.group(1) if m else None
                        if g is not None and g in groups:
                            continue
                    f = facts(c.data, fmt)
                    if f is None:
                        continue
                    if g is not None:
                        groups.add(g)
                    c.facts = f
                    chosen.append(c)
                    taken += 1
                    break
    return chosen


# --------------------------------------------------------------------------- build


def dest_dir(arg: str | None) -> pathlib.Path:
    """The corpus folder: ``--dest``, else ``$PYIMGOPT_BROAD_CORPUS``, else the user cache."""
    return pathlib.Path(arg or os.environ.get(ENV_DEST) or DEFAULT_DEST).expanduser()


def load_manifest(dest: pathlib.Path) -> list[dict]:
    """The manifest's entries (empty when the corpus is absent)."""
    path = dest / MANIFEST
    if not path.is_file():
        return []
    return json.loads(path.read_text())["images"]


def _fingerprint(pkg: Package) -> str:
    """A digest of a package's selection rules: a changed rule rebuilds that package."""
    key = (pkg, TEST_CORPUS_SOURCES, MIN_SIDE, KIND_MIN_SIDE, LARGE_PIXELS, SELECTION_VERSION)
    return hashlib.sha256(repr(key).encode()).hexdigest()[:16]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)[-80:]


def build(dest: pathlib.Path, *, strict: bool, rebuild: bool, only: set[str] | None) -> dict:
    """Download, select and copy every package's images; write the manifest."""
    if rebuild and dest.exists():
        shutil.rmtree(dest)
    (dest / "files").mkdir(parents=True, exist_ok=True)
    (dest / "licenses").mkdir(exist_ok=True)
    entries = load_manifest(dest)
    packages_meta = {}
    if (dest / MANIFEST).is_file():
        packages_meta = json.loads((dest / MANIFEST).read_text()).get("packages", {})
    with tempfile.TemporaryDirectory(prefix="broad-corpus-", dir=dest) as tmp:
        work = pathlib.Path(tmp)
        for index, pkg in enumerate(PACKAGES):
            if only and pkg.name not in only:
                continue
            have = [e for e in entries if e["package"] == pkg.name]
            meta = packages_meta.get(pkg.name, {})
            if (not only and have and all((dest / e["file"]).is_file() for e in have)
                    and meta.get("config") == _fingerprint(pkg)):
                continue
            entries = [e for e in entries if e["package"] != pkg.name]
            # Deduplicate against the packages listed before this one only, so an
            # incremental rebuild selects exactly what a clean build would.
            earlier = {p.name for p in PACKAGES[:index]}
            seen = {e["sha256"] for e in entries if e["package"] in earlier}
            print(f"{pkg.name} ...", flush=True)
            pdir = work / pkg.name
            pdir.mkdir()
            deb = download(pkg.name, pkg.version, pdir, strict)
            version = deb_field(deb, "Version")
            if version != pkg.version:
                print(f"  warning: {pkg.name} is {version}, pinned {pkg.version}", file=sys.stderr)
            tree = pdir / "x"
            _run(["dpkg-deb", "-x", str(deb), str(tree)])
            deb_bytes = deb.stat().st_size
            deb_sha = hashlib.sha256(deb.read_bytes()).hexdigest()
            deb.unlink()
            text = read_copyright(pkg.name, tree, work)
            if text is not None:
                (dest / "licenses" / f"{pkg.name}.copyright").write_text(text)
            cands = scan(pkg, tree, seen)
            chosen = select(pkg, cands)
            out_dir = dest / "files" / pkg.name
            if out_dir.exists():
                shutil.rmtree(out_dir)
            out_dir.mkdir(parents=True)
            for c in chosen:
                name = f"{c.sha256[:10]}-{_safe_name(pathlib.PurePosixPath(c.path).name)}"
                (out_dir / name).write_bytes(c.data)
                lic, how = licence_for(c.path, text)
                f = c.facts
                entries.append({
                    "file": f"files/{pkg.name}/{name}", "package": pkg.name, "version": version,
                    "path": c.path, "licence": lic, "licence_match": how,
                    "category": category(f["format"], c.kind), "kind": c.kind,
                    "large": f["width"] * f["height"] >= LARGE_PIXELS,
                    "bytes": len(c.data), "sha256": c.sha256, **f,
                })
                seen.add(c.sha256)
            packages_meta[pkg.name] = {"version": version, "pinned": pkg.version,
                                       "config": _fingerprint(pkg),
                                       "deb_bytes": deb_bytes, "deb_sha256": deb_sha,
                                       "images": len(chosen), "candidates": len(cands)}
            print(f"  {len(chosen)} of {len(cands)} candidate images", flush=True)
            shutil.rmtree(pdir)
            _write(dest, entries, packages_meta)
    _write(dest, entries, packages_meta)
    return {"images": entries, "packages": packages_meta}


def _write(dest: pathlib.Path, entries: list[dict], packages: dict) -> None:
    order = {p.name: i for i, p in enumerate(PACKAGES)}
    entries = sorted(entries, key=lambda e: (order.get(e["package"], 999), e["file"]))
    doc = {"about": "pyimgopt broad benchmark corpus: bench/broad_corpus.py", "large_pixels":
           LARGE_PIXELS, "packages": packages, "images": entries}
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False))
    os.replace(tmp, dest / MANIFEST)


def summary(entries: list[dict], packages: dict | None = None) -> str:
    """Counts per category and format, bytes, traits: the README's corpus table."""
    lines = []
    cats = Counter(e["category"] for e in entries)
    size = defaultdict(int)
    for e in entries:
        size[e["category"]] += e["bytes"]
    lines.append("| category | files | bytes | of which ≥ 8 MP |")
    lines.append("| --- | ---: | ---: | ---: |")
    for cat in CATEGORIES:
        if cats.get(cat):
            large = sum(1 for e in entries if e["category"] == cat and e["large"])
            lines.append(f"| {cat} | {cats[cat]} | {size[cat]:,} | {large} |")
    lines.append(f"| **all** | {len(entries)} | {sum(size.values()):,} | "
                 f"{sum(e['large'] for e in entries)} |")
    fmts = Counter(e["format"] for e in entries)
    t = Counter()
    for e in entries:
        if e["format"] == "PNG":
            t["16-bit"] += e.get("bit_depth") == 16
            t["palette"] += e.get("color_type") == 3
            t["palette + tRNS"] += e.get("color_type") == 3 and e.get("trns")
            t["gray (+alpha)"] += e.get("color_type") in (0, 4)
            t["RGBA"] += e.get("color_type") == 6
            t["ICC-tagged"] += e["icc"]
            t["interlaced"] += e.get("interlaced")
        if e["format"] == "JPEG":
            t["JPEG progressive"] += e.get("progressive")
            t["JPEG ICC-tagged"] += e["icc"]
            t["JPEG gray"] += e["mode"] == "L"
            t["JPEG CMYK"] += e["mode"] == "CMYK"
            t["JPEG 4:4:4"] += e.get("subsampling") == "4:4:4"
            t["JPEG quality ≤ 80 (estimate)"] += (e.get("quality_estimate") or 101) <= 80
    lines.append("")
    lines.append("Formats: " + ", ".join(f"{k} {v}" for k, v in sorted(fmts.items()))
                 + ". PNG traits: " + ", ".join(f"{k} {v}" for k, v in t.items()
                                                 if not k.startswith("JPEG"))
                 + ". JPEG traits: " + ", ".join(f"{k[5:]} {v}" for k, v in t.items()
                                                  if k.startswith("JPEG")) + ".")
    if packages:
        deb = sum(p["deb_bytes"] for p in packages.values())
        lines.append(f"{len(packages)} packages, {deb / 1e6:.0f} MB of .deb files downloaded.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", help=f"corpus folder (default ${ENV_DEST} or {DEFAULT_DEST})")
    parser.add_argument("--rebuild", action="store_true", help="delete the folder and start again")
    parser.add_argument("--strict", action="store_true",
                        help="fail when a pinned package version is no longer available")
    parser.add_argument("--only", action="append", help="(re)build only this package (repeatable)")
    parser.add_argument("--summary", action="store_true", help="print the manifest's summary and exit")
    args = parser.parse_args(argv)
    dest = dest_dir(args.dest)
    if args.summary:
        doc = json.loads((dest / MANIFEST).read_text())
        print(summary(doc["images"], doc["packages"]))
        return 0
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        print("needs apt-get and dpkg-deb (a Debian or Ubuntu machine)", file=sys.stderr)
        return 2
    doc = build(dest, strict=args.strict, rebuild=args.rebuild,
                only=set(args.only) if args.only else None)
    print(summary(doc["images"], doc["packages"]))
    _check_against_test_corpus(doc["images"])
    print(f"corpus: {dest}")
    return 0


def _check_against_test_corpus(entries: list[dict]) -> None:
    """Warn (never change the selection) if an image is byte-identical to a test-corpus file."""
    here = pathlib.Path(__file__).resolve().parent
    corpus = pathlib.Path(os.environ.get("PYIMGOPT_CORPUS", here.parents[1] / "shared" / "corpus"))
    man = corpus / "MANIFEST.json"
    if not man.is_file():
        return
    test = {e["sha256"]: e["file"] for e in json.loads(man.read_text())}
    for e in entries:
        if e["sha256"] in test:
            print(f"warning: {e['file']} is the test corpus's {test[e['sha256']]}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
