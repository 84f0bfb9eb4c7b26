"""Trust boundaries: capabilities, path scopes and the policy that joins them.

This module owns the early checks of DESIGN.md § Trust boundaries. The client
runs them before it sends a job, and the router runs them again with the
:class:`Policy` bound to the connection; nothing here opens a file, so the
sidecar still re-checks at open time (``O_NOFOLLOW``) — a check here is a
decision about *names*, made once, and a file system can change afterwards.

Capabilities
    :class:`Capabilities` lists the operations a caller may ask for. It denies
    by default: ``Capabilities()`` allows nothing, ``Capabilities.full()``
    allows everything with generous limits.

Scopes
    :class:`Scope` holds absolute glob patterns. A path is in scope when some
    ``allow`` pattern matches it and no ``deny`` pattern does (deny wins; an
    empty ``allow`` allows nothing). Patterns are matched component by
    component, never as string prefixes, so ``/data/**`` does not match
    ``/database/x``:

    - ``*``, ``?`` and ``[...]`` match within one component and never cross
      ``/``; a leading ``.`` is not special (``*`` matches ``.hidden``);
    - ``**`` as a whole component matches zero or more components, so
      ``/data/**`` matches ``/data`` itself and everything below it;
    - the literal (wildcard-free) leading part of a pattern is canonicalised
      with :func:`os.path.realpath` when the :class:`Scope` is built, so a
      scope written through a symlinked folder matches the canonical paths
      that the checks produce. Symlinks *below* a wildcard are not expanded:
      a pattern is always compared with canonical paths.

Case and Unicode
    Matching goes through one function, :func:`_fold`, which decides by
    ``sys.platform``. On Linux (and every other POSIX system) names are
    compared exactly: case-sensitive, no Unicode normalisation, so ``café``
    in NFC and in NFD are two different names, as the file system sees them.
    On macOS and Windows, whose file systems are case-insensitive and
    normalising, both sides are casefolded and NFC-normalised.

Canonical paths
    :func:`canonical_input` and :func:`canonical_output` refuse empty paths,
    control characters (C0, DEL, and also the C1 range U+0080-U+009F, which
    terminals interpret), components over 255 bytes and paths over 4096 bytes
    (``os.fsencode`` lengths), then resolve every symlink and ``..`` the way
    the kernel would. Errors never echo a resolved symlink target: a message
    says *what* is wrong, and ``path`` is the path as the caller gave it.

Hard links
    A hard link inside the read scope to a file outside it cannot be told
    apart from an ordinary file by its name, so an input whose ``st_nlink``
    is above 1 is refused ("hard-linked file refused"). Replacing an output
    (or the input, in place) is done by atomic rename, which replaces a
    directory entry and never writes through another name, so existing
    outputs are not refused for being hard-linked.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import unicodedata
from dataclasses import dataclass, field, fields
from fnmatch import fnmatchcase
from typing import Any

from .errors import (
    CapabilityDeniedError,
    InvalidSettingsError,
    IOFailureError,
    ScopeDeniedError,
)
from .settings import BROWSER_FORMATS, OUTPUT_FORMATS, Settings

__all__ = [
    "Capabilities",
    "Scope",
    "Policy",
    "canonical_input",
    "canonical_output",
    "clobbered_inputs",
    "printable_path",
    "utf8_name",
    "MAX_COMPONENT_BYTES",
    "MAX_PATH_BYTES",
]

#: Longest file-name component accepted, in bytes (NAME_MAX on Linux).
MAX_COMPONENT_BYTES = 255
#: Longest path accepted, in bytes (PATH_MAX on Linux).
MAX_PATH_BYTES = 4096

_WILDCARDS = frozenset("*?[")
#: C0 controls, DEL and the C1 range U+0080-U+009F (terminals interpret them).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _fold(s: str) -> str:
    """Return ``s`` in the form names are compared in on this platform.

    Exact on Linux and other POSIX systems; casefolded and NFC-normalised on
    macOS and Windows, whose file systems treat those variants as one name.
    """
    if sys.platform == "darwin" or sys.platform == "win32":
        return unicodedata.normalize("NFC", unicodedata.normalize("NFC", s).casefold())
    return s


def _fail(name: str, expected: str, value: Any) -> InvalidSettingsError:
    return InvalidSettingsError(
        f"Expected {expected} for {name} but received {value!r}", stage="settings"
    )


# ---------------------------------------------------------------------------
# Capabilities


_INT_LIMITS = (
    "max_pixels",
    "max_file_bytes",
    "max_batch_bytes",
    "max_batch_files",
    "max_priority",
)
_BOOL_CAPS = ("read", "write_new", "overwrite", "in_place", "keep_metadata", "resize")


@dataclass(frozen=True)
class Capabilities:
    """What a caller may ask for. Deny by default: ``Capabilities()`` allows nothing.

    Attributes
    ----------
    read:
        Read inputs at all.
    write_new:
        Create output files that do not exist yet.
    overwrite:
        Replace an existing output file (not the input).
    in_place:
        Replace the input itself.
    formats:
        Allowed ``Settings.format`` values (``keep``, ``auto``, ``jpeg``,
        ``png``, ``webp``, ``avif``, ``jxl``). With ``auto``, a
        ``formats_allowed`` entry beyond the browser formats (``jxl``) must
        be granted here too.
    keep_metadata:
        ``Settings.keep_metadata`` may be true.
    resize:
        ``Settings.max_width`` / ``max_height`` may be set.
    max_pixels, max_file_bytes:
        Upper bounds for ``Settings.max_pixels`` and ``Settings.max_input_bytes``
        (0 allows nothing, since those settings are at least 1).
    max_batch_bytes, max_batch_files:
        Upper bounds for the summed input size and the file count of a batch.
    max_priority:
        Highest job priority allowed; negative priorities are always allowed.
    """

    read: bool = False
    write_new: bool = False
    overwrite: bool = False
    in_place: bool = False
    formats: frozenset[str] = frozenset()
    keep_metadata: bool = False
    resize: bool = False
    max_pixels: int = 0
    max_file_bytes: int = 0
    max_batch_bytes: int = 0
    max_batch_files: int = 0
    max_priority: int = 0

    def __post_init__(self) -> None:
        for name in _BOOL_CAPS:
            if not isinstance(getattr(self, name), bool):
                raise _fail(name, "a bool", getattr(self, name))
        for name in _INT_LIMITS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise _fail(name, "an integer >= 0", v)
        fmts = self.formats
        if isinstance(fmts, (str, bytes)) or not isinstance(fmts, (frozenset, set, list, tuple)):
            raise _fail("formats", "a list of format names", fmts)
        bad = [f for f in fmts if f not in OUTPUT_FORMATS]
        if bad:
            raise _fail("formats", f"names among {', '.join(OUTPUT_FORMATS)}", bad[0])
        object.__setattr__(self, "formats", frozenset(fmts))

    @classmethod
    def full(cls) -> "Capabilities":
        """Everything allowed, with limits at generous values."""
        return cls(
            read=True,
            write_new=True,
            overwrite=True,
            in_place=True,
            formats=frozenset(OUTPUT_FORMATS),
            keep_metadata=True,
            resize=True,
            max_pixels=1_000_000_000,
            max_file_bytes=4 * 1024**3,
            max_batch_bytes=1024**4,
            max_batch_files=10_000_000,
            max_priority=1_000_000,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict (``formats`` as a sorted list)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["formats"] = sorted(self.formats)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "Capabilities":
        """Build from :meth:`to_dict` output; missing keys keep the (denying) defaults.

        Raises :class:`~pyimgopt.errors.InvalidSettingsError` naming the field
        for unknown keys and wrong types.
        """
        _check_keys("capabilities", d, {f.name for f in fields(cls)})
        data = dict(d)
        if "formats" in data and not isinstance(data["formats"], (list, tuple)):
            raise _fail("formats", "a list of format names", data["formats"])
        return cls(**data)

    def _deny(self, message: str) -> CapabilityDeniedError:
        return CapabilityDeniedError(message, stage="capabilities")

    def check_settings(self, s: Settings, *, in_place: bool, priority: int) -> None:
        """Refuse settings this caller was not granted.

        Raises
        ------
        CapabilityDeniedError
            With ``stage="capabilities"`` and a message naming the capability.
        """
        if not self.read:
            raise self._deny("capability 'read' not granted")
        if s.format not in self.formats:
            raise self._deny(f"capability 'formats' does not include {s.format!r}")
        # auto may write only what was granted beyond the browser formats (e.g. jxl)
        extra = sorted(set(s.formats_allowed) - set(BROWSER_FORMATS) - self.formats)
        if s.format == "auto" and extra:
            raise self._deny(f"capability 'formats' does not include {extra[0]!r} "
                             "(in formats_allowed)")
        if s.keep_metadata and not self.keep_metadata:
            raise self._deny("capability 'keep_metadata' not granted")
        if s.needs_resize_box() and not self.resize:
            raise self._deny("capability 'resize' not granted (max_width/max_height set)")
        if s.max_pixels > self.max_pixels:
            raise self._deny(
                f"max_pixels {s.max_pixels} exceeds capability 'max_pixels' {self.max_pixels}"
            )
        if s.max_input_bytes > self.max_file_bytes:
            raise self._deny(
                f"max_input_bytes {s.max_input_bytes} exceeds capability "
                f"'max_file_bytes' {self.max_file_bytes}"
            )
        if in_place and not self.in_place:
            raise self._deny("capability 'in_place' not granted")
        if priority > self.max_priority:
            raise self._deny(
                f"priority {priority} exceeds capability 'max_priority' {self.max_priority}"
            )

    def check_batch(self, n_files: int, total_bytes: int) -> None:
        """Refuse a batch over ``max_batch_files`` files or ``max_batch_bytes`` bytes."""
        if n_files > self.max_batch_files:
            raise self._deny(
                f"batch of {n_files} files exceeds capability "
                f"'max_batch_files' {self.max_batch_files}"
            )
        if total_bytes > self.max_batch_bytes:
            raise self._deny(
                f"batch of {total_bytes} bytes exceeds capability "
                f"'max_batch_bytes' {self.max_batch_bytes}"
            )


def _check_keys(what: str, d: Any, known: set[str]) -> None:
    if not isinstance(d, dict):
        raise _fail(what, "a dict", d)
    unknown = sorted(map(str, set(d) - known))
    if unknown:
        raise InvalidSettingsError(
            f"Unknown {what} field(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(sorted(known))}",
            stage="settings",
        )


# ---------------------------------------------------------------------------
# Paths


def _split(path: str) -> list[str]:
    """Components of an absolute path, without empty and ``.`` components."""
    if os.altsep:
        path = path.replace(os.altsep, os.sep)
    return [c for c in path.split(os.sep) if c not in ("", ".")]


def _as_str(path: Any) -> str:
    try:
        p = os.fspath(path)
    except TypeError:
        raise ScopeDeniedError(
            f"path must be a str or os.PathLike, not {type(path).__name__}", stage="scope"
        ) from None
    return os.fsdecode(p) if isinstance(p, bytes) else p


def _check_chars(p: str, given: str) -> None:
    """Refuse empty paths, control characters and over-long names (the C limits)."""
    if not p:
        raise ScopeDeniedError("path is empty", path=given, stage="scope")
    if _CONTROL.search(p):
        raise ScopeDeniedError("path contains control characters", path=given, stage="scope")
    try:
        raw = os.fsencode(p)
    except UnicodeError:
        raise ScopeDeniedError(
            "path cannot be encoded for the file system", path=given, stage="scope"
        ) from None
    if len(raw) > MAX_PATH_BYTES:
        raise ScopeDeniedError(
            f"path longer than {MAX_PATH_BYTES} bytes", path=given, stage="scope"
        )
    sep = os.fsencode(os.sep)
    if os.altsep:
        raw = raw.replace(os.fsencode(os.altsep), sep)
    if any(len(c) > MAX_COMPONENT_BYTES for c in raw.split(sep)):
        raise ScopeDeniedError(
            f"path component longer than {MAX_COMPONENT_BYTES} bytes", path=given, stage="scope"
        )


def _unresolvable(given: str, what: str) -> ScopeDeniedError:
    # Never name the errno's filename: it may be a resolved target out of scope.
    return ScopeDeniedError(f"{what} path cannot be resolved", path=given, stage="scope")


def canonical_input(path: str | os.PathLike[str]) -> str:
    """Return the canonical absolute path of an existing input.

    Every symlink is followed and ``..`` resolved (``realpath(strict=True)``).

    Raises
    ------
    ScopeDeniedError
        Empty path, control characters, a component over 255 bytes or a path
        over 4096 bytes, or a path that cannot be resolved (symlink loop,
        permission denied).
    IOFailureError
        ``"no such file"`` (``stage="read"``) when the input does not exist.
    """
    given = _as_str(path)
    _check_chars(given, given)
    try:
        real = os.path.realpath(given, strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise IOFailureError("no such file", path=given, stage="read") from None
    except OSError:
        raise _unresolvable(given, "input") from None
    _check_chars(real, given)
    return real


def canonical_output(path: str | os.PathLike[str]) -> str:
    """Return the canonical absolute path an output would be written to.

    The path is walked from the root like the kernel would: existing
    components are resolved (symlinks followed, ``..`` applied to the resolved
    folder, including a final component that is an existing or dangling
    symlink), and the components that do not exist yet are appended.

    Raises
    ------
    ScopeDeniedError
        The character and length checks of :func:`canonical_input`; a ``..``
        below a folder that does not exist; a path that cannot be resolved.
    """
    given = _as_str(path)
    _check_chars(given, given)
    absolute = given if os.path.isabs(given) else os.path.join(os.getcwd(), given)
    if os.name != "posix":  # drive letters and UNC roots: let ntpath do the walk
        try:
            real = os.path.realpath(absolute)
        except OSError:
            raise _unresolvable(given, "output") from None
        _check_chars(real, given)
        return real
    parts = _split(absolute)
    resolved = os.sep
    i = 0
    while i < len(parts):
        comp = parts[i]
        if comp == "..":
            # ``resolved`` is a canonical existing folder, so its parent is
            # what the kernel's ``..`` gives.
            resolved = os.path.dirname(resolved)
            i += 1
            continue
        cand = os.path.join(resolved, comp)
        try:
            st = os.lstat(cand)
        except FileNotFoundError:
            break
        except OSError:
            raise _unresolvable(given, "output") from None
        if stat.S_ISLNK(st.st_mode):
            try:
                cand = os.path.realpath(cand, strict=True)
            except FileNotFoundError:
                if i != len(parts) - 1:
                    raise _unresolvable(given, "output") from None
                # A dangling final symlink: writing through it would create
                # its target, so the target is what gets checked.
                cand = os.path.realpath(cand)
            except OSError:
                raise _unresolvable(given, "output") from None
        resolved = cand
        i += 1
    rest = parts[i:]
    if ".." in rest:
        raise ScopeDeniedError(
            "output path has '..' below a folder that does not exist", path=given, stage="scope"
        )
    real = os.path.join(resolved, *rest)
    _check_chars(real, given)
    return real


# ---------------------------------------------------------------------------
# Scopes


def _compile(pattern: Any, name: str) -> tuple[str, ...]:
    """Turn an absolute glob pattern into folded components, literal part canonical."""
    if not isinstance(pattern, str) or not pattern:
        raise _fail(name, "a non-empty str pattern", pattern)
    if not os.path.isabs(pattern):
        raise _fail(name, "an absolute pattern", pattern)
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in pattern):
        raise _fail(name, "a pattern without control characters", pattern)
    comps = _split(pattern)
    n_literal = next((k for k, c in enumerate(comps) if _WILDCARDS & set(c)), len(comps))
    wild = comps[n_literal:]
    if ".." in wild:
        raise _fail(name, "a pattern without '..' after a wildcard", pattern)
    drive = os.path.splitdrive(pattern)[0]
    literal = os.path.join(drive + os.sep, *comps[:n_literal])
    try:
        literal = os.path.realpath(literal)  # resolves what exists, appends the rest
    except OSError:
        literal = os.path.normpath(literal)
    return tuple(_fold(c) for c in _split(os.path.splitdrive(literal)[1]) + wild)


def _match(pat: tuple[str, ...], comps: tuple[str, ...]) -> bool:
    """Component-wise glob match; ``**`` matches zero or more components."""
    # prefix-of-pattern x prefix-of-path table, one row at a time.
    row = [True] + [False] * len(comps)
    for p in pat:
        if p == "**":
            new = [False] * len(row)
            acc = False
            for j in range(len(row)):
                acc = acc or row[j]
                new[j] = acc
        else:
            new = [False] + [row[j] and fnmatchcase(comps[j], p) for j in range(len(comps))]
        row = new
        if not any(row):
            return False
    return row[-1]


@dataclass(frozen=True)
class Scope:
    """Allow/deny glob patterns over canonical absolute paths; deny wins.

    Nothing is allowed when ``allow`` is empty. See the module docstring for
    the glob rules. The literal leading part of each pattern is resolved when
    the scope is built.
    """

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    _allow: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)
    _deny: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("allow", "deny"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
                raise _fail(name, "a list of absolute glob patterns", v)
            object.__setattr__(self, name, tuple(v))
            object.__setattr__(self, "_" + name, tuple(_compile(p, name) for p in v))

    def matches(self, canonical_path: str) -> bool:
        """True when the (already canonical, absolute) path is in scope."""
        if not isinstance(canonical_path, str) or not os.path.isabs(canonical_path):
            return False
        comps = tuple(_fold(c) for c in _split(os.path.splitdrive(canonical_path)[1]))
        if ".." in comps:
            return False
        if not any(_match(p, comps) for p in self._allow):
            return False
        return not any(_match(p, comps) for p in self._deny)

    @property
    def everything(self) -> bool:
        """True when the scope is the whole file system (``/**`` and no deny)."""
        return not self.deny and any(p in ("/**", "**") for p in self.allow)

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"allow": [...], "deny": [...]}`` with the patterns as written."""
        return {"allow": list(self.allow), "deny": list(self.deny)}

    @classmethod
    def from_dict(cls, d: Any) -> "Scope":
        """Build from :meth:`to_dict` output; unknown keys or wrong types are an error."""
        _check_keys("scope", d, {"allow", "deny"})
        return cls(**d)


# ---------------------------------------------------------------------------
# Policy


@dataclass(frozen=True)
class Policy:
    """Capabilities plus a read scope and a write scope: what one client may do."""

    capabilities: Capabilities
    read: Scope
    write: Scope

    def __post_init__(self) -> None:
        for name, cls in (("capabilities", Capabilities), ("read", Scope), ("write", Scope)):
            if not isinstance(getattr(self, name), cls):
                raise _fail(name, f"a {cls.__name__}", getattr(self, name))

    @classmethod
    def trusted(cls) -> "Policy":
        """Everything allowed: full capabilities, read and write scopes ``/**``."""
        everywhere = Scope(allow=(os.path.abspath(os.sep) + "**",))
        return cls(Capabilities.full(), everywhere, everywhere)

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"capabilities": {...}, "read": {...}, "write": {...}}``."""
        return {
            "capabilities": self.capabilities.to_dict(),
            "read": self.read.to_dict(),
            "write": self.write.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any) -> "Policy":
        """Build from :meth:`to_dict` output; a missing part denies everything."""
        _check_keys("policy", d, {"capabilities", "read", "write"})
        return cls(
            Capabilities.from_dict(d.get("capabilities", {})),
            Scope.from_dict(d.get("read", {})),
            Scope.from_dict(d.get("write", {})),
        )

    def check_job(
        self, input: str, output: str | None, *, in_place: bool
    ) -> tuple[str, str | None]:
        """Check one job's paths; return ``(canonical input, canonical output or None)``.

        An ``output`` that resolves to the input itself is treated as in place
        (and returned as the canonical input path). With ``in_place=True``,
        ``output`` must be ``None`` or resolve to the input.

        Every refusal has ``stage="scope"`` (except a missing input inside the
        read scope: ``IOFailureError("no such file", stage="read")``) and
        ``path`` = the path concerned as the caller gave it — the input's, or
        the output's for output refusals. Messages never contain a resolved
        symlink target.

        Raises
        ------
        CapabilityDeniedError
            ``read``, ``in_place``, ``overwrite`` or ``write_new`` not granted.
        ScopeDeniedError
            Bad characters or lengths; input outside the read scope, not a
            regular file, or hard-linked; in-place input outside the write
            scope; output outside the write scope or existing but not a
            regular file.
        IOFailureError
            The input does not exist (and its would-be location is in scope).
        InvalidSettingsError
            ``in_place=True`` with an output that is not the input.
        """
        caps = self.capabilities
        given_in = _as_str(input)
        if not caps.read:
            raise CapabilityDeniedError(
                "capability 'read' not granted", path=given_in, stage="scope"
            )
        try:
            inp = canonical_input(given_in)
        except IOFailureError:
            # Do not let "no such file" reveal what exists outside the scope.
            try:
                where = os.path.realpath(given_in)
            except OSError:
                where = ""
            if not self.read.matches(where):
                raise ScopeDeniedError(
                    "input is outside the read scope", path=given_in, stage="scope"
                ) from None
            raise
        if not self.read.matches(inp):
            raise ScopeDeniedError("input is outside the read scope", path=given_in, stage="scope")
        try:
            st = os.lstat(inp)  # lstat: a name that became a symlink since is refused
        except OSError:
            raise ScopeDeniedError(
                "input changed while being checked", path=given_in, stage="scope"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise ScopeDeniedError("input is not a regular file", path=given_in, stage="scope")
        if st.st_nlink > 1 and not self.read.everything:
            # (With the whole file system in scope, no other name can be outside it.)
            raise ScopeDeniedError("hard-linked file refused", path=given_in, stage="scope")

        out: str | None = None
        out_st: os.stat_result | None = None
        given_out: str | None = None
        same = False
        if output is not None:
            given_out = _as_str(output)
            out = canonical_output(given_out)
            try:
                out_st = os.lstat(out)
            except FileNotFoundError:
                out_st = None
            except OSError:
                raise _unresolvable(given_out, "output") from None
            same = out == inp or (
                out_st is not None and (out_st.st_dev, out_st.st_ino) == (st.st_dev, st.st_ino)
            )
            if in_place and not same:
                raise InvalidSettingsError(
                    "in_place=True with an output that is not the input",
                    path=given_out,
                    stage="scope",
                )

        if in_place or same:
            if not caps.in_place:
                raise CapabilityDeniedError(
                    "capability 'in_place' not granted", path=given_in, stage="scope"
                )
            if not self.write.matches(inp):
                raise ScopeDeniedError(
                    "input is outside the write scope (in place)", path=given_in, stage="scope"
                )
            return inp, (inp if output is not None else None)

        if out is None:
            return inp, None
        assert given_out is not None
        self._check_write(out, out_st, given_out)
        return inp, out

    def _check_write(self, out: str, out_st: os.stat_result | None, given_out: str) -> None:
        caps = self.capabilities
        if not self.write.matches(out):
            raise ScopeDeniedError(
                "output is outside the write scope", path=given_out, stage="scope"
            )
        if out_st is None:
            if not caps.write_new:
                raise CapabilityDeniedError(
                    "capability 'write_new' not granted", path=given_out, stage="scope"
                )
        elif not stat.S_ISREG(out_st.st_mode):
            raise ScopeDeniedError(
                "output exists and is not a regular file", path=given_out, stage="scope"
            )
        elif not caps.overwrite:
            raise CapabilityDeniedError(
                "capability 'overwrite' not granted: output exists", path=given_out, stage="scope"
            )

    def check_output(self, output: str, *, input: str) -> str:
        """Check one more name an output may be written under (``format="auto"`` picks
        its extension after encoding); return it canonical.

        The same rules as the output of :meth:`check_job` — write scope (deny
        patterns included), ``write_new`` for a new file, ``overwrite`` for an
        existing regular file, nothing else — and it must not be the
        (canonical) ``input`` itself.

        Raises
        ------
        ScopeDeniedError, CapabilityDeniedError
            As :meth:`check_job` does for its output.
        """
        given = _as_str(output)
        out = canonical_output(given)
        try:
            out_st = os.lstat(out)
        except FileNotFoundError:
            out_st = None
        except OSError:
            raise _unresolvable(given, "output") from None
        if out == input or (out_st is not None and _same_file(out_st, input)):
            raise ScopeDeniedError("output would replace the input", path=given, stage="scope")
        self._check_write(out, out_st, given)
        return out


def _same_file(st: os.stat_result, path: str) -> bool:
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)


def clobbered_inputs(pairs: list[tuple[str, str | None]], *, any_extension: bool) -> set[int]:
    """Indexes of (input, output) pairs whose output would replace another input.

    Paths are canonical. ``any_extension`` (``format="auto"``, whose output
    extension is chosen after encoding) compares outputs with inputs by the
    name without extension. An output that is its own input (in place) is
    not a clash. Two inputs never lose each other's bytes this way.
    """
    def key(p: str) -> str:
        return _fold(os.path.splitext(p)[0] if any_extension else p)

    owners: dict[str, set[str]] = {}
    for inp, _out in pairs:
        owners.setdefault(key(inp), set()).add(inp)
    return {i for i, (inp, out) in enumerate(pairs)
            if out is not None and owners.get(key(out), set()) - {inp}}


def utf8_name(path: str) -> bool:
    """Whether ``path`` is valid UTF-8 (no undecodable bytes held as surrogate escapes).

    Paths cross the wire and the journal as UTF-8; a name that is not is
    refused per file (with :func:`printable_path` in the message), never for
    the whole batch.
    """
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def printable_path(path: str) -> str:
    """``path`` with undecodable bytes shown as ``\\xff`` escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
