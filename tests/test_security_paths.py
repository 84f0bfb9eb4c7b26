"""Security: capabilities, path scopes and Policy.check_job on a real file system."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyimgopt import Settings
from pyimgopt.errors import (
    CapabilityDeniedError,
    InvalidSettingsError,
    IOFailureError,
    PyimgoptError,
    ScopeDeniedError,
)
from pyimgopt.security import (
    Capabilities,
    Policy,
    Scope,
    _fold,
    canonical_input,
    canonical_output,
)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="exact (case-sensitive) names are the Linux rule"
)

SECRET_NAME = "TOPSECRET-zq7x"


@pytest.fixture
def tree(tmp_path):
    """``scope/`` (readable and writable) with ``in.jpg``, and ``secret/`` beside it."""
    base = tmp_path.resolve()
    scope = base / "scope"
    scope.mkdir()
    (scope / "in.jpg").write_bytes(b"in")
    secret = base / "secret"
    secret.mkdir()
    (secret / SECRET_NAME).write_bytes(b"secret")
    return base


def policy_for(base, caps: Capabilities | None = None, **scope_kw) -> Policy:
    scope = Scope(allow=(f"{base}/scope/**",), **scope_kw)
    return Policy(caps or Capabilities.full(), scope, scope)


def assert_no_secret(err: PyimgoptError) -> None:
    for text in (str(err), err.message, repr(err), str(err.path)):
        assert SECRET_NAME not in text
        assert "/secret" not in text


# --- deny by default -------------------------------------------------------


def test_security_default_capabilities_deny_everything(tree):
    caps = Capabilities()
    assert not any(getattr(caps, n) for n in ("read", "write_new", "overwrite", "in_place"))
    with pytest.raises(CapabilityDeniedError, match="'read'"):
        caps.check_settings(Settings(), in_place=False, priority=0)
    pol = Policy(caps, Scope(allow=("/**",)), Scope(allow=("/**",)))
    with pytest.raises(CapabilityDeniedError, match="'read'") as ei:
        pol.check_job(str(tree / "scope" / "in.jpg"), None, in_place=False)
    assert ei.value.code == "capability_denied" and ei.value.stage == "scope"


def test_security_default_scope_allows_nothing(tree):
    assert not Scope().matches(str(tree / "scope" / "in.jpg"))
    assert not Scope(deny=("/**",)).matches("/x")
    pol = Policy(Capabilities.full(), Scope(), Scope())
    with pytest.raises(ScopeDeniedError, match="outside the read scope"):
        pol.check_job(str(tree / "scope" / "in.jpg"), None, in_place=False)


def test_security_trusted_policy_allows_a_plain_read(tree):
    p = str(tree / "scope" / "in.jpg")
    assert Policy.trusted().check_job(p, None, in_place=False) == (p, None)


# --- traversal, absolute paths, symlinks ------------------------------------


def test_security_dotdot_traversal_refused(tree):
    pol = policy_for(tree)
    sneaky = f"{tree}/scope/../secret/{SECRET_NAME}"
    with pytest.raises(ScopeDeniedError, match="outside the read scope") as ei:
        pol.check_job(sneaky, None, in_place=False)
    assert ei.value.path == sneaky and ei.value.stage == "scope"
    # `..` that stays inside is fine, and comes back canonical.
    (tree / "scope" / "sub").mkdir()
    inp, _ = pol.check_job(f"{tree}/scope/sub/../in.jpg", None, in_place=False)
    assert inp == f"{tree}/scope/in.jpg"


def test_security_relative_dotdot_traversal_refused(tree, monkeypatch):
    monkeypatch.chdir(tree / "scope")
    pol = policy_for(tree)
    assert pol.check_job("in.jpg", None, in_place=False)[0] == f"{tree}/scope/in.jpg"
    with pytest.raises(ScopeDeniedError):
        pol.check_job(f"../secret/{SECRET_NAME}", None, in_place=False)


def test_security_absolute_path_outside_scope_refused(tree):
    pol = policy_for(tree)
    with pytest.raises(ScopeDeniedError, match="outside the read scope"):
        pol.check_job(str(tree / "secret" / SECRET_NAME), None, in_place=False)
    # A missing file outside the scope is a scope refusal, not "no such file".
    with pytest.raises(ScopeDeniedError):
        pol.check_job(str(tree / "secret" / "nope"), None, in_place=False)
    with pytest.raises(IOFailureError, match="no such file") as ei:
        pol.check_job(str(tree / "scope" / "nope.jpg"), None, in_place=False)
    assert ei.value.stage == "read"


def test_security_file_symlink_to_outside_refused_without_leaking_target(tree):
    link = tree / "scope" / "innocent.jpg"
    link.symlink_to(tree / "secret" / SECRET_NAME)
    with pytest.raises(ScopeDeniedError) as ei:
        policy_for(tree).check_job(str(link), None, in_place=False)
    assert ei.value.path == str(link)
    assert_no_secret(ei.value)


def test_security_directory_symlink_to_outside_refused(tree):
    (tree / "secret" / "plain.jpg").write_bytes(b"p")
    link = tree / "scope" / "photos"
    link.symlink_to(tree / "secret", target_is_directory=True)
    with pytest.raises(ScopeDeniedError) as ei:
        policy_for(tree).check_job(str(link / "plain.jpg"), None, in_place=False)
    assert ei.value.path == str(link / "plain.jpg")
    assert_no_secret(ei.value)


def test_security_symlink_inside_scope_resolves_to_canonical(tree):
    link = tree / "scope" / "alias.jpg"
    link.symlink_to(tree / "scope" / "in.jpg")
    assert policy_for(tree).check_job(str(link), None, in_place=False)[0] == str(
        tree / "scope" / "in.jpg"
    )


def test_security_symlinked_folder_in_allow_pattern_still_matches(tree):
    (tree / "via").symlink_to(tree / "scope", target_is_directory=True)
    scope = Scope(allow=(f"{tree}/via/**",))
    assert scope.matches(f"{tree}/scope/in.jpg")
    pol = Policy(Capabilities.full(), scope, scope)
    assert pol.check_job(f"{tree}/via/in.jpg", None, in_place=False)[0] == f"{tree}/scope/in.jpg"
    assert not scope.matches(f"{tree}/secret/{SECRET_NAME}")


def test_security_symlink_loop_refused_cleanly(tree):
    loop = tree / "scope" / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ScopeDeniedError, match="cannot be resolved"):
        policy_for(tree).check_job(str(loop), None, in_place=False)


# --- glob rules -------------------------------------------------------------


def test_security_star_does_not_cross_slash():
    s = Scope(allow=("/srv/img/*.jpg",))
    assert s.matches("/srv/img/a.jpg")
    assert s.matches("/srv/img/.hidden.jpg")
    assert not s.matches("/srv/img/sub/a.jpg")
    assert not s.matches("/srv/img/a.png")
    q = Scope(allow=("/srv/?/x", "/srv/[ab]c/y"))
    assert q.matches("/srv/a/x") and not q.matches("/srv/a/b/x") and not q.matches("/srv/ab/x")
    assert q.matches("/srv/bc/y") and not q.matches("/srv/cc/y")


def test_security_doublestar_is_component_wise_not_prefix():
    s = Scope(allow=("/data/**",))
    assert s.matches("/data")
    assert s.matches("/data/x")
    assert s.matches("/data/a/b/c.jpg")
    assert not s.matches("/database/x")
    assert not s.matches("/database")
    assert not s.matches("/dat")
    mid = Scope(allow=("/data/**/raw/*.tif",))
    assert mid.matches("/data/raw/a.tif") and mid.matches("/data/x/y/raw/a.tif")
    assert not mid.matches("/data/x/raw/sub/a.tif")


def test_security_deny_wins_over_allow(tree):
    scope = Scope(allow=(f"{tree}/scope/**",), deny=(f"{tree}/scope/private/**", "/**/*.key"))
    (tree / "scope" / "private").mkdir()
    (tree / "scope" / "private" / "p.jpg").write_bytes(b"p")
    (tree / "scope" / "a.key").write_bytes(b"k")
    pol = Policy(Capabilities.full(), scope, scope)
    assert scope.matches(f"{tree}/scope/in.jpg")
    for p in (f"{tree}/scope/private/p.jpg", f"{tree}/scope/a.key", f"{tree}/scope/private"):
        assert not scope.matches(p)
    with pytest.raises(ScopeDeniedError):
        pol.check_job(f"{tree}/scope/private/p.jpg", None, in_place=False)


def test_security_scope_patterns_validated():
    for bad, field in (
        (("relative/**",), "allow"),
        (("/a/*/../b",), "allow"),
        (("/a\nb/**",), "allow"),
        ("/a/**", "allow"),
    ):
        with pytest.raises(InvalidSettingsError, match=field):
            Scope(allow=bad)
    with pytest.raises(InvalidSettingsError, match="deny"):
        Scope(allow=("/**",), deny=(3,))


# --- characters and lengths -------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["a\x00b.jpg", "a\nb.jpg", "a\rb.jpg", "a\tb.jpg", "a\x1b[31m.jpg", "a\x7f.jpg", "a\x9b.jpg"],
)
def test_security_control_characters_refused(tree, bad):
    path = f"{tree}/scope/{bad}"
    for fn in (canonical_input, canonical_output):
        with pytest.raises(ScopeDeniedError, match="control characters") as ei:
            fn(path)
        assert ei.value.code == "scope_denied"
    with pytest.raises(ScopeDeniedError, match="control characters"):
        policy_for(tree).check_job(path, None, in_place=False)
    with pytest.raises(ScopeDeniedError, match="control characters"):
        policy_for(tree).check_job(f"{tree}/scope/in.jpg", path, in_place=False)


def test_security_empty_path_refused():
    for fn in (canonical_input, canonical_output):
        with pytest.raises(ScopeDeniedError, match="empty"):
            fn("")


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda b: f"{b}/scope/{'a' * 256}.jpg", "component longer than 255"),
        (lambda b: f"{b}/scope/{'é' * 128}", "component longer than 255"),  # 256 bytes in UTF-8
        (lambda b: f"{b}/scope/" + "d/" * 2100 + "x.jpg", "longer than 4096"),
    ],
)
def test_security_overlong_paths_refused_cleanly(tree, make, words):
    path = make(tree)
    for fn in (canonical_input, canonical_output):
        with pytest.raises(ScopeDeniedError, match=words):
            fn(path)
    pol = policy_for(tree)
    with pytest.raises(ScopeDeniedError, match=words):
        pol.check_job(path, None, in_place=False)
    with pytest.raises(ScopeDeniedError, match=words):
        pol.check_job(f"{tree}/scope/in.jpg", path, in_place=False)


def test_security_255_byte_component_is_accepted(tree):
    name = "a" * 251 + ".jpg"
    (tree / "scope" / name).write_bytes(b"x")
    assert (
        policy_for(tree).check_job(f"{tree}/scope/{name}", None, in_place=False)[0].endswith(name)
    )


# --- case and Unicode -------------------------------------------------------


@linux_only
def test_security_case_variants_are_different_names_on_linux(tree):
    (tree / "Photos").mkdir()
    (tree / "photos").mkdir()
    (tree / "Photos" / "a.jpg").write_bytes(b"A")
    (tree / "photos" / "a.jpg").write_bytes(b"a")
    scope = Scope(allow=(f"{tree}/Photos/**",))
    pol = Policy(Capabilities.full(), scope, scope)
    assert pol.check_job(f"{tree}/Photos/a.jpg", None, in_place=False)[0] == f"{tree}/Photos/a.jpg"
    assert not scope.matches(f"{tree}/photos/a.jpg")
    with pytest.raises(ScopeDeniedError):
        pol.check_job(f"{tree}/photos/a.jpg", None, in_place=False)


@linux_only
def test_security_nfc_and_nfd_are_different_names_on_linux(tree):
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    (tree / nfc).mkdir()
    (tree / nfd).mkdir()
    (tree / nfc / "a.jpg").write_bytes(b"1")
    (tree / nfd / "a.jpg").write_bytes(b"2")
    scope = Scope(allow=(f"{tree}/{nfc}/**",))
    pol = Policy(Capabilities.full(), scope, scope)
    assert pol.check_job(f"{tree}/{nfc}/a.jpg", None, in_place=False)[0] == f"{tree}/{nfc}/a.jpg"
    with pytest.raises(ScopeDeniedError):
        pol.check_job(f"{tree}/{nfd}/a.jpg", None, in_place=False)


def test_security_fold_is_exact_on_linux_and_folds_on_macos_windows(monkeypatch):
    nfd = unicodedata.normalize("NFD", "Café")
    monkeypatch.setattr(sys, "platform", "linux")
    assert _fold(nfd) == nfd
    assert not Scope(allow=("/x/Photos/**",)).matches("/x/photos/a")
    for plat in ("darwin", "win32"):
        monkeypatch.setattr(sys, "platform", plat)
        assert _fold(nfd) == _fold("CAFÉ") == unicodedata.normalize("NFC", "café")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert Scope(allow=("/x/Photos/**",)).matches("/x/PHOTOS/" + nfd)


# --- kinds of file ----------------------------------------------------------


def test_security_hard_link_refused(tree):
    # A hard link in scope to a file outside it looks like any other name.
    link = tree / "scope" / "linked.jpg"
    os.link(tree / "secret" / SECRET_NAME, link)
    with pytest.raises(ScopeDeniedError, match="hard-linked file refused") as ei:
        policy_for(tree).check_job(str(link), None, in_place=False)
    assert_no_secret(ei.value)
    with pytest.raises(ScopeDeniedError, match="hard-linked"):
        policy_for(tree).check_job(str(link), None, in_place=True)


def test_security_directory_and_fifo_refused_as_input(tree):
    pol = policy_for(tree)
    (tree / "scope" / "dir.jpg").mkdir()
    with pytest.raises(ScopeDeniedError, match="not a regular file"):
        pol.check_job(str(tree / "scope" / "dir.jpg"), None, in_place=False)
    fifo = tree / "scope" / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ScopeDeniedError, match="not a regular file"):
        pol.check_job(str(fifo), None, in_place=False)
    # A symlink in scope to a FIFO in scope: refused by what it is, not where.
    (tree / "scope" / "p2.jpg").symlink_to(fifo)
    with pytest.raises(ScopeDeniedError, match="not a regular file"):
        pol.check_job(str(tree / "scope" / "p2.jpg"), None, in_place=False)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_security_device_refused_as_input():
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    scope = Scope(allow=("/dev/**",))
    pol = Policy(Capabilities.full(), scope, scope)
    with pytest.raises(ScopeDeniedError, match="not a regular file"):
        pol.check_job("/dev/null", None, in_place=False)


# --- outputs ------------------------------------------------------------------


def test_security_output_outside_write_scope_refused(tree):
    pol = Policy(
        Capabilities.full(), Scope(allow=(f"{tree}/**",)), Scope(allow=(f"{tree}/scope/out/**",))
    )
    (tree / "scope" / "out").mkdir()
    inp = str(tree / "scope" / "in.jpg")
    with pytest.raises(ScopeDeniedError, match="outside the write scope") as ei:
        pol.check_job(inp, str(tree / "scope" / "x.jpg"), in_place=False)
    assert ei.value.path == str(tree / "scope" / "x.jpg")
    with pytest.raises(ScopeDeniedError, match="outside the write scope"):
        pol.check_job(inp, f"{tree}/scope/out/../../secret/new.jpg", in_place=False)
    assert pol.check_job(inp, f"{tree}/scope/out/new.jpg", in_place=False) == (
        inp,
        f"{tree}/scope/out/new.jpg",
    )
    # Folders that do not exist yet are appended as written.
    assert pol.check_job(inp, f"{tree}/scope/out/a/b/new.jpg", in_place=False)[1] == (
        f"{tree}/scope/out/a/b/new.jpg"
    )
    with pytest.raises(ScopeDeniedError, match="'..' below a folder"):
        pol.check_job(inp, f"{tree}/scope/out/nope/../../../secret/x.jpg", in_place=False)


def test_security_output_through_symlinked_parent_pointing_outside_refused(tree):
    (tree / "scope" / "out").symlink_to(tree / "secret", target_is_directory=True)
    pol = policy_for(tree)
    with pytest.raises(ScopeDeniedError, match="outside the write scope") as ei:
        pol.check_job(
            str(tree / "scope" / "in.jpg"), str(tree / "scope" / "out" / "new.jpg"), in_place=False
        )
    assert_no_secret(ei.value)
    assert canonical_output(tree / "scope" / "out" / "new.jpg") == str(tree / "secret" / "new.jpg")


def test_security_output_symlink_dotdot_follows_the_kernel(tree):
    # `link/..` is the parent of the link's *target*, not lexically `scope/`.
    (tree / "secret" / "deep").mkdir()
    (tree / "scope" / "link").symlink_to(tree / "secret" / "deep", target_is_directory=True)
    out = f"{tree}/scope/link/../x.jpg"
    assert canonical_output(out) == f"{tree}/secret/x.jpg"
    with pytest.raises(ScopeDeniedError):
        policy_for(tree).check_job(str(tree / "scope" / "in.jpg"), out, in_place=False)


def test_security_output_final_symlink_is_resolved(tree):
    (tree / "scope" / "dangling.jpg").symlink_to(tree / "secret" / "will-be-created.jpg")
    (tree / "scope" / "existing.jpg").symlink_to(tree / "secret" / SECRET_NAME)
    pol = policy_for(tree)
    for name in ("dangling.jpg", "existing.jpg"):
        with pytest.raises(ScopeDeniedError, match="outside the write scope") as ei:
            pol.check_job(
                str(tree / "scope" / "in.jpg"), str(tree / "scope" / name), in_place=False
            )
        assert_no_secret(ei.value)


def test_security_output_existing_not_regular_refused(tree):
    (tree / "scope" / "d").mkdir()
    with pytest.raises(ScopeDeniedError, match="not a regular file"):
        policy_for(tree).check_job(
            str(tree / "scope" / "in.jpg"), str(tree / "scope" / "d"), in_place=False
        )


def _caps(**kw) -> Capabilities:
    base = Capabilities.full().to_dict()
    base.update(kw)
    return Capabilities.from_dict(base)


def test_security_overwrite_needs_capability(tree):
    (tree / "scope" / "old.jpg").write_bytes(b"old")
    inp, out = str(tree / "scope" / "in.jpg"), str(tree / "scope" / "old.jpg")
    with pytest.raises(CapabilityDeniedError, match="'overwrite'") as ei:
        policy_for(tree, _caps(overwrite=False)).check_job(inp, out, in_place=False)
    assert ei.value.path == out and ei.value.stage == "scope"
    # write_new does not stand in for overwrite, nor the reverse.
    with pytest.raises(CapabilityDeniedError, match="'overwrite'"):
        policy_for(tree, _caps(overwrite=False, write_new=True)).check_job(inp, out, in_place=False)
    assert policy_for(tree, _caps(write_new=False)).check_job(inp, out, in_place=False) == (
        inp,
        out,
    )


def test_security_write_new_needs_capability(tree):
    inp, out = str(tree / "scope" / "in.jpg"), str(tree / "scope" / "new.webp")
    with pytest.raises(CapabilityDeniedError, match="'write_new'"):
        policy_for(tree, _caps(write_new=False)).check_job(inp, out, in_place=False)
    assert policy_for(tree, _caps(overwrite=False)).check_job(inp, out, in_place=False) == (
        inp,
        out,
    )


def test_security_in_place_needs_capability_and_write_scope(tree):
    inp = str(tree / "scope" / "in.jpg")
    no = policy_for(tree, _caps(in_place=False))
    with pytest.raises(CapabilityDeniedError, match="'in_place'"):
        no.check_job(inp, None, in_place=True)
    # Naming the input as the output is in place too, even with overwrite granted.
    with pytest.raises(CapabilityDeniedError, match="'in_place'"):
        no.check_job(inp, f"{tree}/scope/./in.jpg", in_place=False)
    assert policy_for(tree).check_job(inp, None, in_place=True) == (inp, None)
    assert policy_for(tree).check_job(inp, inp, in_place=False) == (inp, inp)
    read_only = Policy(Capabilities.full(), Scope(allow=(f"{tree}/**",)), Scope())
    with pytest.raises(ScopeDeniedError, match="outside the write scope"):
        read_only.check_job(inp, None, in_place=True)
    with pytest.raises(InvalidSettingsError, match="in_place"):
        policy_for(tree).check_job(inp, f"{tree}/scope/other.jpg", in_place=True)


# --- capabilities vs settings -------------------------------------------------


@pytest.mark.parametrize(
    "caps, settings_kw, call_kw, words",
    [
        (dict(formats=["keep", "jpeg"]), dict(format="webp"), {}, "'formats'"),
        (dict(keep_metadata=False), dict(keep_metadata=True), {}, "'keep_metadata'"),
        (dict(resize=False), dict(max_width=800), {}, "'resize'"),
        (dict(resize=False), dict(max_height=600), {}, "'resize'"),
        (dict(max_pixels=10_000), dict(max_pixels=10_001), {}, "'max_pixels'"),
        (dict(max_file_bytes=1000), dict(max_input_bytes=1001), {}, "'max_file_bytes'"),
        (dict(in_place=False), {}, dict(in_place=True), "'in_place'"),
        (dict(max_priority=5), {}, dict(priority=6), "'max_priority'"),
        (dict(read=False), {}, {}, "'read'"),
    ],
)
def test_security_check_settings_each_capability(caps, settings_kw, call_kw, words):
    c = _caps(**caps)
    s = Settings(**settings_kw)
    kw = dict(in_place=False, priority=0) | call_kw
    with pytest.raises(CapabilityDeniedError, match=words) as ei:
        c.check_settings(s, **kw)
    assert ei.value.stage == "capabilities" and ei.value.code == "capability_denied"
    # The same request passes once that capability is granted.
    Capabilities.full().check_settings(s, **kw)


def test_security_check_settings_limits_are_inclusive_and_negative_priority_allowed():
    c = _caps(max_pixels=10_000, max_file_bytes=1000, max_priority=0)
    c.check_settings(Settings(max_pixels=10_000, max_input_bytes=1000), in_place=False, priority=0)
    c.check_settings(Settings(max_pixels=1, max_input_bytes=1), in_place=False, priority=-50)


def test_security_check_batch_limits():
    c = _caps(max_batch_files=3, max_batch_bytes=100)
    c.check_batch(3, 100)
    with pytest.raises(CapabilityDeniedError, match="'max_batch_files'"):
        c.check_batch(4, 1)
    with pytest.raises(CapabilityDeniedError, match="'max_batch_bytes'"):
        c.check_batch(1, 101)
    with pytest.raises(CapabilityDeniedError):
        Capabilities().check_batch(1, 0)


# --- serialisation --------------------------------------------------------------


def test_security_capabilities_dict_is_json_friendly():
    import json

    d = Capabilities.full().to_dict()
    assert d["formats"] == sorted(d["formats"]) and isinstance(d["formats"], list)
    assert Capabilities.from_dict(json.loads(json.dumps(d))) == Capabilities.full()
    assert Capabilities.from_dict({}) == Capabilities()


@pytest.mark.parametrize(
    "d, field",
    [
        ({"raed": True}, "raed"),
        ({"read": 1}, "read"),
        ({"max_pixels": "10"}, "max_pixels"),
        ({"max_pixels": True}, "max_pixels"),
        ({"max_batch_files": -1}, "max_batch_files"),
        ({"formats": "jpeg"}, "formats"),
        ({"formats": ["gif"]}, "formats"),
    ],
)
def test_security_capabilities_from_dict_rejects_bad_fields(d, field):
    with pytest.raises(InvalidSettingsError, match=field):
        Capabilities.from_dict(d)


def test_security_policy_from_dict_rejects_bad_fields():
    with pytest.raises(InvalidSettingsError, match="wat"):
        Policy.from_dict({"wat": {}})
    with pytest.raises(InvalidSettingsError, match="allow"):
        Policy.from_dict({"read": {"allow": "/**"}})
    with pytest.raises(InvalidSettingsError, match="policy"):
        Policy.from_dict([])
    assert Policy.from_dict({}) == Policy(Capabilities(), Scope(), Scope())


_formats = st.frozensets(st.sampled_from(["keep", "auto", "jpeg", "png", "webp", "avif"]))
_limit = st.integers(min_value=0, max_value=2**62)
_caps_st = st.builds(
    Capabilities,
    read=st.booleans(),
    write_new=st.booleans(),
    overwrite=st.booleans(),
    in_place=st.booleans(),
    formats=_formats,
    keep_metadata=st.booleans(),
    resize=st.booleans(),
    max_pixels=_limit,
    max_file_bytes=_limit,
    max_batch_bytes=_limit,
    max_batch_files=_limit,
    max_priority=_limit,
)
_pattern = st.lists(
    st.sampled_from(["a", "b", "*", "**", "?x", "[ab]", "img.jpg"]), min_size=1, max_size=4
).map(lambda cs: "/srv/" + "/".join(cs))
_scope_st = st.builds(
    Scope,
    allow=st.lists(_pattern, max_size=3).map(tuple),
    deny=st.lists(_pattern, max_size=2).map(tuple),
)


@settings(max_examples=60, deadline=None)
@given(caps=_caps_st, read=_scope_st, write=_scope_st)
def test_security_policy_round_trips(caps, read, write):
    import json

    p = Policy(caps, read, write)
    back = Policy.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p
    for path in ("/srv/a/img.jpg", "/srv/b", "/srv/ax/a/b"):
        assert back.read.matches(path) == read.matches(path)


# --- TOCTOU ---------------------------------------------------------------------


def test_security_toctou_flip_never_yields_the_secret(tree):
    """A name flipping between an in-scope file and a symlink to a secret.

    Every check either refuses or returns a canonical path inside the scope.
    """
    scope_dir = tree / "scope"
    flip = scope_dir / "flip.jpg"
    flip.write_bytes(b"ok")
    secret = str(tree / "secret" / SECRET_NAME)
    pol = policy_for(tree)
    stop = threading.Event()
    flips = [0]

    def flipper() -> None:
        tmp_link = str(scope_dir / ".tmp-link")
        tmp_file = str(scope_dir / ".tmp-file")
        while not stop.is_set():
            os.symlink(secret, tmp_link)
            os.replace(tmp_link, flip)
            os.close(os.open(tmp_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            os.replace(tmp_file, flip)
            flips[0] += 2

    # A short switch interval lets the flipper thread interleave with the checks.
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    t = threading.Thread(target=flipper, daemon=True)
    t.start()
    ok = refused = 0
    start = time.monotonic()

    def going() -> bool:  # at least 1 s, and on until 2000 flips (slow disks), 8 s at most
        spent = time.monotonic() - start
        return spent < 1.0 or (flips[0] < 2000 and spent < 8.0)

    try:
        while going():
            try:
                inp, out = pol.check_job(str(flip), None, in_place=False)
            except PyimgoptError as e:
                assert isinstance(e, ScopeDeniedError), repr(e)
                assert_no_secret(e)
                refused += 1
            else:
                assert inp == str(flip) and out is None
                assert pol.read.matches(inp) and SECRET_NAME not in inp
                ok += 1
    finally:
        stop.set()
        t.join(timeout=5)
        sys.setswitchinterval(old_interval)
    assert not t.is_alive()
    assert flips[0] > 1000, flips[0]
    assert ok > 0 and refused > 0, (ok, refused)
