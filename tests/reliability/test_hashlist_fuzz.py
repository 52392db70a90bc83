"""Fuzzed hash lists: every problem is reported with its line number, nothing is half-imported,
and no input (random bytes, long lines, NULs, wrong encodings) raises anything unexpected."""
import json

from hypothesis import HealthCheck, given, settings, strategies as st

import hashmatch as hm
from hashmatch.hashlists import import_hash_list, parse_hash_list

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conftest import run_cli  # noqa: E402

HEX = "0123456789abcdef"


def valid_line(fmt, k):
    h = "".join(HEX[(k * 7 + i * 13) % 16] for i in range(64))
    if fmt == "te":
        return f"pdq {h}"
    if fmt == "csv":
        return f"{h},{50 + k % 50},s{k}"
    return json.dumps({"hash": h, "quality": 50 + k % 50, "source": f"s{k}"})


BAD_LINES = st.one_of(
    st.binary(min_size=1, max_size=200).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.just(b"pdq " + b"a" * 70 * 1024),  # a line over 64 KiB
    st.just(b"pdq " + b"f" * 30 + b"\0" + b"f" * 33),  # a NUL inside a hash
    st.just("pdq caf\xe9".encode("latin-1")),  # not UTF-8
    st.just("pdq 1234".encode("utf-16-le")),  # UTF-16 without a BOM
    st.just(b"pdq " + b"g" * 64),
    st.just(b"\xef\xbb\xbf\xef\xbb\xbf"),
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(fmt=st.sampled_from(["te", "csv", "jsonl"]), n=st.integers(1, 12),
       bad=st.lists(st.tuples(st.integers(0, 12), BAD_LINES), min_size=1, max_size=3))
def test_fuzzed_lists_report_line_numbers_and_import_nothing(tmp_path_factory, fmt, n, bad):
    lines = [valid_line(fmt, k).encode() for k in range(n)]
    if fmt == "csv":
        lines.insert(0, b"hash,quality,source")
    offset = 2 if fmt == "csv" else 1
    for at, raw in bad:
        lines.insert(min(at, len(lines) - (offset - 1)) + (offset - 1), raw)
    data = b"\n".join(lines) + b"\n"
    parsed = parse_hash_list(data, "list." + fmt, fmt)
    for problem in parsed.problems:
        assert 1 <= problem.line <= len(lines) + 1
        assert str(problem).startswith(f"list.{fmt}:{problem.line}: ")
    if not parsed.problems:
        return  # the mutation happened to be a valid line (e.g. a comment): fine
    folder = tmp_path_factory.mktemp("lists")
    path = folder / f"list.{fmt}"
    path.write_bytes(data)
    with hm.Index.open(folder / "db.hmdb", create=True) as index:
        report = import_hash_list(index, path, fmt)
        assert not report.imported and len(index) == 0  # nothing half-imported


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2000), fmt=st.sampled_from(["auto", "te", "csv", "jsonl"]))
def test_random_bytes_never_raise(data, fmt):
    parsed = parse_hash_list(data, "random.txt", fmt)
    assert all(p.line >= 0 for p in parsed.problems)


def test_cli_import_of_a_broken_list_names_lines_and_changes_nothing(tmp_path):
    db = tmp_path / "case.hmdb"
    good = [valid_line("te", k) for k in range(5)]
    path = tmp_path / "partner.txt"
    path.write_bytes(("\n".join(good[:2]) + "\n").encode() + b"pdq \xff\xfe\0zz\n"
                     + ("\n".join(good[2:]) + "\n").encode() + b"x" * 70000 + b"\n")
    result = run_cli("import", "--db", db, path)
    assert result.returncode == 2, result.stderr
    assert f"{path}:3:" in result.stderr and f"{path}:7:" in result.stderr
    assert "Traceback" not in result.stderr
    with hm.Index.open(db, create=True) as index:
        assert len(index) == 0
