"""An in-place rewrite never loses a save made while the file was being optimised
(issue 20 review, finding 1): the source is re-checked just before the rename; if it
changed, nothing is written (``source_changed``, retryable) and the watcher does not
take the user's save for its own write."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from conftest import encode, photo, temp_files
from pyimgopt.errors import SourceChangedError
from pyimgopt.manifest import content_hash
from pyimgopt.pipeline import optimize_file
from pyimgopt.result import Result
from pyimgopt.settings import Settings
from pyimgopt.watch import Watcher

pytestmark = pytest.mark.one_backend


def _png(seed: int) -> bytes:
    return encode(Image.fromarray(photo(64, 48, seed=seed)), "PNG", compress_level=0)


def test_in_place_write_keeps_a_save_made_during_the_run(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(_png(1))
    saved = _png(2) + b""  # what the user saves while pyimgopt works

    def progress(stage):
        if stage == "probe":  # after the read, before anything is written
            with open(p, "wb") as f:  # an editor saving over the same inode
                f.write(saved)

    r = optimize_file(str(p), None, Settings(), progress=progress)
    assert r.status == "failed" and r.error.code == "source_changed" and r.error.retryable
    assert isinstance(r.error, SourceChangedError) and r.error.stage == "write"
    assert p.read_bytes() == saved  # the user's content, byte for byte
    assert temp_files(tmp_path) == []
    # without a save in between the same run does write (the check is not a blanket refusal)
    r = optimize_file(str(p), None, Settings())
    assert r.status == "optimized" and len(p.read_bytes()) < len(saved)


def test_in_place_write_keeps_a_file_replaced_by_rename_during_the_run(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(_png(1))
    saved = _png(3)

    def progress(stage):
        if stage == "probe":  # after the read, before anything is written
            (tmp_path / "new.png").write_bytes(saved)
            os.replace(tmp_path / "new.png", p)  # an editor's atomic save: a new inode

    r = optimize_file(str(p), None, Settings(), progress=progress)
    assert r.status == "failed" and r.error.code == "source_changed"
    assert p.read_bytes() == saved and temp_files(tmp_path) == []


def test_watcher_records_only_its_own_write(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(_png(4))
    w = Watcher(None, str(tmp_path), Settings(), in_place=True)
    st = os.stat(p)
    # a result saying the watcher wrote other bytes than those on disk now: a user save since
    other = Result(input=str(p), output=str(p), status="optimized", bytes_out=st.st_size,
                   output_hash=content_hash(b"x" * st.st_size))
    w._finished(other)
    assert str(p) not in w._written
    mine = Result(input=str(p), output=str(p), status="optimized", bytes_out=st.st_size,
                  output_hash=content_hash(p.read_bytes()))
    w._finished(mine)
    assert w._written[str(p)] == (st.st_size, st.st_mtime_ns)
    # unchanged / skipped files were not written by the watcher
    w._written.clear()
    w._finished(Result(input=str(p), output=str(p), status="unchanged", bytes_out=st.st_size,
                       output_hash=content_hash(p.read_bytes())))
    assert w._written == {}
