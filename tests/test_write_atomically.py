"""hashmatch.paths.write_atomically: the one way reports, exports and codes caches are
replaced, so a failed write never leaves a truncated file where a good one was."""
import os
import stat

import pytest

from hashmatch.paths import write_atomically


def test_a_writer_failing_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_bytes(b"the old report")

    def half_then_fail(out):
        out.write(b"half of the new rep")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(target, half_then_fail)
    assert target.read_bytes() == b"the old report"
    assert os.listdir(tmp_path) == ["report.json"]


def test_the_new_content_replaces_the_old(tmp_path):
    target = tmp_path / "codes"
    target.write_bytes(b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    write_atomically(target, lambda out: [out.write(part) for part in (b"a", b"b")])
    assert target.read_bytes() == b"ab"
    assert os.listdir(tmp_path) == ["codes"]


def test_permissions_are_set_when_asked(tmp_path):
    target = tmp_path / "out.csv"
    write_atomically(target, b"x", permissions=0o644)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_missing_folder_is_an_error_not_a_stray_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomically(tmp_path / "no such folder" / "x", b"x")
    assert os.listdir(tmp_path) == []
