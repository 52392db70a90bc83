"""Issue 17: our exports are read by the real python-threatexchange package (its local_file
collaboration and `threatexchange match -H`), not by a reimplementation of its parsing."""
import io

import numpy as np
import pytest

import hashmatch as hm
from hashmatch.hashlists import export_hash_list, parse_hash_list, pytx_line

pytest.importorskip("threatexchange")  # a declared test dependency (pyproject [test])
from threatexchange.exchanges.impl.file_api import (  # noqa: E402
    FileCollaborationConfig, LocalFileSignalExchangeAPI)
from threatexchange.signal_type.pdq.signal import PdqSignal  # noqa: E402


@pytest.fixture
def index(tmp_path):
    codes = np.random.default_rng(3).integers(0, 256, (5, 32), np.uint8)
    with hm.Index.open(tmp_path / "x.hmdb", create=True) as index:
        index.add_hashes(codes, qualities=[90, 80, 70, 60, 50], labels=["l"], source="s")
        index.add_hashes(["c3d4e5f6a7b8c9d0"], algorithm="phash")
        index.expected = {row.tobytes().hex() for row in codes}
        yield index


def _read_with_local_file(path, signal_type=None):
    collab = FileCollaborationConfig(name="ours", filename=str(path), signal_type=signal_type)
    api = LocalFileSignalExchangeAPI.for_collab(collab)
    updates = {}
    for delta in api.fetch_iter([PdqSignal], None):
        updates.update(delta.updates)
    converted = LocalFileSignalExchangeAPI.naive_convert_to_signal_type([PdqSignal], collab,
                                                                        updates)
    return set(converted.get(PdqSignal, {}))


@pytest.mark.parametrize("fmt, signal_type", [("pytx", None), ("hex", "pdq")])
def test_local_file_collaboration_reads_our_export(index, tmp_path, fmt, signal_type):
    path = tmp_path / f"ours.{fmt}.txt"
    with open(path, "w") as out:
        assert export_hash_list(index, out, fmt) == 5
    assert _read_with_local_file(path, signal_type) == index.expected


def test_te_export_was_not_readable_by_pytx(index, tmp_path):
    path = tmp_path / "te.txt"
    with open(path, "w") as out:
        export_hash_list(index, out, "te")
    assert _read_with_local_file(path) == set()  # why the pytx and hex formats exist


def test_match_dash_h_accepts_every_hex_line(index):
    out = io.StringIO()
    export_hash_list(index, out, "hex")
    lines = out.getvalue().splitlines()
    # `threatexchange match -H photo -` passes each stripped stdin line to this
    assert [PdqSignal.validate_signal_str(line.strip()) for line in lines] == lines
    assert set(lines) == index.expected


@pytest.mark.parametrize("fmt", ["pytx", "hex"])
def test_pytx_formats_import_back(index, fmt):
    out = io.StringIO()
    export_hash_list(index, out, fmt)
    parsed = parse_hash_list(out.getvalue().encode(), "list.txt")
    assert not parsed.problems and {e.hash for e in parsed.entries} == index.expected


def test_pytx_line_is_what_hash_should_print():
    fp = hm.Fingerprint.from_hex("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22")
    assert pytx_line(fp) == "pdq " + fp.hex()
    assert PdqSignal.validate_signal_str(pytx_line(fp).partition(" ")[2]) == fp.hex()
