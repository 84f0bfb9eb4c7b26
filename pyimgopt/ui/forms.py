"""The web UI's edge checks: its policy, and page fields turned into Settings.

Owns :class:`UIError` (an HTTP status plus a typed error for the page),
:func:`ui_policy` (read and write inside the UI's root folders, every format,
no priority) and :func:`settings_from_form` (only known fields, each checked;
ranges and messages are :class:`Settings`' own; ``formats_allowed`` only
with ``format="auto"``, where it means something; ``target_size`` parsed by
:func:`~pyimgopt.settings.parse_size`) and :func:`submit_options` (the
batch's ``force`` and ``dry_run``, which are the client's submit options, as
in the CLI, not settings).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..errors import InvalidSettingsError, PyimgoptError
from ..security import Capabilities, Policy, Scope
from ..settings import AUTO_FORMATS, FITS, OUTPUT_FORMATS, Settings, parse_size

__all__ = ["UIError", "ui_policy", "settings_from_form", "form_from_settings", "submit_options",
           "SUBMIT_OPTIONS"]

#: Form fields the page may send, and the Settings field each sets.
_FORM_FIELDS = ("format", "quality", "target_ssim", "max_width", "max_height", "fit",
                "keep_metadata", "lossy_png", "effort", "lossless", "formats_allowed",
                "target_size", "min_scale", "mark")

#: Request fields beside ``settings`` that reach :meth:`Client.submit` as they do from the CLI.
SUBMIT_OPTIONS = ("force", "dry_run")


class UIError(Exception):
    """A refused UI request: HTTP ``status`` plus a typed error for the page."""

    def __init__(self, status: int, err: PyimgoptError) -> None:
        super().__init__(str(err))
        self.status = status
        self.err = err

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.err.code, "message": self.err.message}}


def ui_policy(roots: list[str], *, in_place: bool = True) -> Policy:
    """Read and write inside ``roots`` (canonical folders), every format, no priority."""
    canon = [os.path.realpath(r) for r in roots]
    scope = Scope(allow=tuple(os.path.join(r, "**") for r in canon))
    caps = dataclasses.replace(Capabilities.full(), in_place=in_place, max_priority=0)
    return Policy(caps, scope, scope)


def form_from_settings(settings: dict) -> dict[str, Any]:
    """The page's form fields of a batch's wire settings (a recovered batch's, for the page)."""
    return {k: settings[k] for k in _FORM_FIELDS if settings.get(k) is not None}


def _int_field(form: dict, name: str, lo: int, hi: int) -> int | None:
    v = form.get(name)
    if v is None or v == "":
        return None
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise InvalidSettingsError(f"Expected an integer between {lo} and {hi} for {name}"
                                   f" but received {v!r}", stage="ui")
    try:
        n = int(v)
    except ValueError:
        raise InvalidSettingsError(f"Expected an integer between {lo} and {hi} for {name}"
                                   f" but received {v!r}", stage="ui") from None
    return n


def settings_from_form(form: Any) -> Settings:
    """Build :class:`Settings` from the page's JSON; unknown keys and bad values refused."""
    if not isinstance(form, dict):
        raise InvalidSettingsError("settings must be a JSON object", stage="ui")
    unknown = sorted(set(form) - set(_FORM_FIELDS))
    if unknown:
        raise InvalidSettingsError(f"unknown setting {unknown[0]!r}", stage="ui")
    kw: dict[str, Any] = {}
    if form.get("format", "keep") not in OUTPUT_FORMATS:
        raise InvalidSettingsError(f"format must be one of {', '.join(OUTPUT_FORMATS)}", stage="ui")
    kw["format"] = form.get("format", "keep")
    if form.get("fit", "inside") not in FITS:
        raise InvalidSettingsError(f"fit must be one of {', '.join(FITS)}", stage="ui")
    kw["fit"] = form.get("fit", "inside")
    for name, lo, hi in (("quality", 1, 100), ("max_width", 1, 1 << 20), ("max_height", 1, 1 << 20),
                         ("effort", 0, 9)):
        n = _int_field(form, name, lo, hi)
        if n is not None:
            kw[name] = n
    ssim = form.get("target_ssim")
    if ssim not in (None, ""):
        try:
            kw["target_ssim"] = float(ssim)
        except (TypeError, ValueError):
            raise InvalidSettingsError(f"target_ssim must be a number, not {ssim!r}", stage="ui") from None
    size = form.get("target_size")
    if size not in (None, ""):
        if isinstance(size, str):
            size = size.strip()
        kw["target_size"] = parse_size(size)  # 200KB, 1.5MB, 300KiB, bytes; else invalid_settings
    scale = form.get("min_scale")
    if scale not in (None, ""):
        if isinstance(scale, bool) or not isinstance(scale, (int, float, str)):
            raise InvalidSettingsError(f"min_scale must be a number in (0, 1], not {scale!r}",
                                       stage="ui")
        try:
            kw["min_scale"] = float(scale)
        except ValueError:
            raise InvalidSettingsError(f"min_scale must be a number in (0, 1], not {scale!r}",
                                       stage="ui") from None
    for name in ("keep_metadata", "lossy_png", "mark"):
        v = form.get(name, False)
        if not isinstance(v, bool):
            raise InvalidSettingsError(f"{name} must be true or false", stage="ui")
        kw[name] = v
    lossless = form.get("lossless")
    if lossless is not None and not isinstance(lossless, bool):
        raise InvalidSettingsError("lossless must be true, false or null (the format's default)",
                                   stage="ui")
    kw["lossless"] = lossless
    allowed = form.get("formats_allowed")
    if allowed is not None:
        if kw["format"] != "auto":
            raise InvalidSettingsError("formats_allowed applies to format auto only", stage="ui")
        if not isinstance(allowed, list) or not all(isinstance(f, str) for f in allowed):
            raise InvalidSettingsError(
                f"formats_allowed must be a list of names among {', '.join(AUTO_FORMATS)}",
                stage="ui")
        kw["formats_allowed"] = tuple(allowed)  # names and non-emptiness: Settings' own checks
    return Settings(**kw)  # range checks and messages are Settings' own


def submit_options(req: dict) -> dict[str, bool]:
    """``force`` and ``dry_run`` from a batch request: each absent (False) or a boolean.

    ``force`` redoes files the manifest or a marker knows as unchanged;
    ``dry_run`` runs the pipeline and writes nothing (no output, no manifest
    entry). Both are passed to :meth:`Client.submit` as the CLI passes them.
    """
    opts = {}
    for name in SUBMIT_OPTIONS:
        v = req.get(name, False)
        if not isinstance(v, bool):
            raise InvalidSettingsError(f"{name} must be true or false", stage="ui")
        opts[name] = v
    return opts
