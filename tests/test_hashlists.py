"""Hash lists: parsing, validation with line numbers, all-or-nothing import, round-trip export."""
import io
import json

import numpy as np
import pytest

import hashmatch as hm
from hashmatch.hashlists import (export_hash_list, import_hash_list, iter_export_rows,
                                 parse_hash_list)

from conftest import CORPUS, PDQ_REF

HAYSTACK = PDQ_REF / "hashlists" / "haystack.txt"
H1, H2, H3 = ("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
              "30a10efd71c83f429013d48d0ffffc52e34e0e17ada952a9d29685211ea9e5af",
              "adad5a64b5a102e55b62a08856dacd5ae63b847fc337b4b766b319361bc93188")
PHASH = "c3d4e5f6a7b8c9d0"


def parse(text, fmt="auto", algorithm="pdq", name="list.txt"):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return parse_hash_list(data, name, fmt, algorithm)


def problems(parsed):
    return [(p.line, p.message) for p in parsed.problems]


# -- formats --------------------------------------------------------------------------------
def test_te_text_in_all_its_forms():
    text = (f"\ufeff# a comment\r\npdq {H1}\r\n\n{H2.upper()}\n{H3},87,/cases/a b,c.jpg\n"
            f"phash {PHASH} extra words\n")
    parsed = parse(text)
    assert parsed.format == "te" and parsed.problems == []
    assert [(e.line, e.algorithm, e.hash, e.quality) for e in parsed.entries] == [
        (2, "pdq", H1, None), (4, "pdq", H2, None), (5, "pdq", H3, 87), (6, "phash", PHASH, None)]
    assert parsed.entries[2].path == "/cases/a b,c.jpg"
    assert parsed.entries[3].meta == {"comment": "extra words"}


def test_imagehash_lists_need_the_algorithm():
    assert problems(parse(PHASH + "\n"))[0][1].startswith("wrong length: 16 hex digits")
    parsed = parse(f"{PHASH}\n{PHASH[::-1]},\n", algorithm="dhash")
    assert [e.algorithm for e in parsed.entries] == ["dhash", "dhash"] and not parsed.problems


def test_csv_with_header_and_jsonl():
    csv_text = ("hash,algorithm,quality,labels,source,meta\n"
                f"{H1},pdq,90,fake-id;poster,partner A,\"{{\"\"case\"\": \"\"A-17\"\"}}\"\n"
                f"{PHASH},phash,,,,\n")
    parsed = parse(csv_text, name="list.csv")
    assert parsed.format == "csv" and parsed.problems == []
    first, second = parsed.entries
    assert (first.labels, first.source, first.meta, first.quality) == (
        ["fake-id", "poster"], "partner A", {"case": "A-17"}, 90)
    assert (second.algorithm, second.hash, second.line) == ("phash", PHASH, 3)

    jsonl = (json.dumps({"hash": H1, "labels": ["x"], "quality": 55}) + "\n"
             + json.dumps({"hash": PHASH, "algorithm": "ahash"}) + "\n")
    parsed = parse(jsonl, name="list")  # detected from content
    assert parsed.format == "jsonl" and [e.quality for e in parsed.entries] == [55, None]


# -- validation ---------------------------------------------------------------------------------
def test_every_kind_of_bad_line_is_reported_with_its_line_number():
    text = "\n".join([
        H1,                       # 1 fine
        H1[:-2],                  # 2 wrong length
        H1[:-1] + "g",            # 3 non-hex
        f"md5 {H2}",              # 4 unknown algorithm
        f"{H2},101",              # 5 bad quality (range)
        f"{H3},high",             # 6 bad quality (not a number)
        H1,                       # 7 duplicate of line 1
    ]).encode() + b"\n" + H2.encode()[:10] + b"\xff\xfe\n" + H3.encode() + b"\0\n" + \
        b"a" * 70000 + b"\n"
    found = problems(parse(text))
    lines = [line for line, _ in found]
    assert lines == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    messages = dict(found)
    assert "wrong length" in messages[2] and "64 hex digits" in messages[2]
    assert "not a hex hash" in messages[3] and "'g'" in messages[3]
    assert "unknown algorithm 'md5'" in messages[4]
    assert "bad quality 101" in messages[5] and "bad quality 'high'" in messages[6]
    assert messages[7] == "duplicate of line 1"
    assert "not UTF-8" in messages[8] and "0xff" in messages[8]
    assert "NUL" in messages[9] and "too long" in messages[10]
    assert str(parse(text).problems[0]).startswith("list.txt:2: ")


def test_utf16_file_and_bad_csv_and_json():
    utf16 = ("pdq " + H1 + "\n").encode("utf-16")
    assert "UTF-16" in problems(parse(utf16))[0][1]
    assert "no 'hash' column" in problems(parse("sha,quality\nab,1\n", fmt="csv"))[0][1]
    assert problems(parse("{not json\n", fmt="jsonl"))[0][0] == 1
    bad = parse(json.dumps({"hash": H1, "quality": 12.5}) + "\n[1]\n", fmt="jsonl")
    assert [line for line, _ in problems(bad)] == [1, 2]


def test_rows_of_one_item_must_agree():
    rows = [{"item": "7", "hash": H1, "source": "a"}, {"item": "7", "hash": PHASH,
            "algorithm": "phash", "source": "b"}]
    parsed = parse("".join(json.dumps(r) + "\n" for r in rows), fmt="jsonl")
    assert problems(parsed) == [(2, "item '7': labels, source, path, sha256, size or meta "
                                    "differ from line 1")]


# -- import ----------------------------------------------------------------------------------
def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_invalid_list_imports_nothing_unless_skip_invalid(tmp_path):
    path = write(tmp_path, "l.txt", f"{H1}\n{H2}\nnot-a-hash\n")
    with hm.Index.open(tmp_path / "db.hmdb", create=True) as index:
        report = import_hash_list(index, path)
        assert not report.imported and len(index) == 0 and report.problems[0].line == 3
        report = import_hash_list(index, path, skip_invalid=True, labels=["l"], source="s")
        assert report.imported and len(report.added) == 2 and len(index) == 2
        again = import_hash_list(index, path, skip_invalid=True, labels=["l"], source="s")
        assert again.added == [] and again.already_present == 2 and len(index) == 2


def test_one_hash_list_matches_itself_and_empty_list_is_fine(tmp_path):
    with hm.Index.open(tmp_path / "db.hmdb", create=True) as index:
        report = import_hash_list(index, write(tmp_path, "empty.txt", ""))
        assert report.imported and report.added == [] and len(index) == 0
        assert index.query_hashes([H1]) == [[]]
        report = import_hash_list(index, write(tmp_path, "one.txt", f"pdq {H1}\n"))
        assert len(report.added) == 1
        [[match]] = index.query_hashes([H1])
        assert match.item_id == report.added[0] and match.distance == 0
        [[near]] = index.query_hashes([H2[:0] + H1[:-1] + "3"])  # one bit away
        assert near.distance == 1


def test_reference_haystack_imports_and_clusters(tmp_path):
    with hm.Index.open(tmp_path / "db.hmdb", create=True) as index:
        report = import_hash_list(index, HAYSTACK, source="PDQ reference haystack")
        assert report.imported and len(report.added) == 1350 and not report.problems
        groups = hm.cluster(index, max_distance=31)
    assert groups and sum(c.size for c in groups) <= 1350
    assert max(c.size for c in groups) > 2  # the haystack is clustered like real data


def _index_with_everything(tmp_path):
    photos = sorted((CORPUS / "photos").glob("*.jpg"))[:3]
    index = hm.Index.open(tmp_path / "src.hmdb", create=True, algorithms=("pdq", "phash"))
    index.add_files(photos, labels=["ad", "semi;colon"], source="case 1", workers=1)
    index.add_hashes([H1, H2], qualities=[90, None], labels=["partner"], source="list A",
                     meta=[{"case": "A-17", "note": "line\nbreak \"quoted\""}, {}])
    index.add_hashes([PHASH], algorithm="phash", source=None)
    return index


def _comparable(rows):
    """Export rows without this database's item ids, but with the grouping they express."""
    first_of = {}
    out = []
    for row in rows:
        group = first_of.setdefault(row["item"], len(first_of))
        out.append({**{k: v for k, v in row.items() if k != "item"}, "group": group})
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_then_import_round_trips(tmp_path, fmt):
    with _index_with_everything(tmp_path) as source:
        exported = io.StringIO()
        count = export_hash_list(source, exported, fmt)
        before = list(iter_export_rows(source))
    full = [row for row in before if row["region"] == "full"]
    regions = [row for row in before if row["region"] != "full"]
    # pdq + phash of 3 photos, 3 list hashes; plus the photos' PDQ region rows, which
    # must travel too (they cannot be recomputed from hashes at the receiving end)
    assert count == len(before) and len(full) == 3 * 2 + 3
    assert all(row["algorithm"] == "pdq" and row["path"] for row in regions)
    path = write(tmp_path, f"list.{fmt}", exported.getvalue())
    with hm.Index.open(tmp_path / "copy.hmdb", create=True) as copy:
        report = import_hash_list(copy, path)
        assert report.imported and not report.problems and len(report.added) == 6
        after = list(iter_export_rows(copy))
    assert _comparable(after) == _comparable(before)


def test_te_export_is_reference_text(tmp_path):
    with _index_with_everything(tmp_path) as source:
        out = io.StringIO()
        export_hash_list(source, out, "te")
    lines = out.getvalue().splitlines()
    assert f"{H1},90" in lines and H2 in lines and len(lines) == 5
    parsed = parse(out.getvalue())
    assert not parsed.problems and {e.hash for e in parsed.entries} >= {H1, H2}


def test_store_codes_unchanged_by_round_trip(tmp_path):
    codes = np.random.default_rng(0).integers(0, 256, (20, 32), np.uint8)
    with hm.Index.open(tmp_path / "a.hmdb", create=True) as index:
        index.add_hashes(codes)
        out = io.StringIO()
        export_hash_list(index, out, "te")
    with hm.Index.open(tmp_path / "b.hmdb", create=True) as index:
        import_hash_list(index, write(tmp_path, "a.txt", out.getvalue()))
        assert np.array_equal(index.fingerprint_rows("pdq").codes, codes)


def test_imagehash_hex_list_matches_the_image(tmp_path):
    import imagehash
    from PIL import Image

    photo = sorted((CORPUS / "photos").glob("*.jpg"))[20]
    hex_text = str(imagehash.phash(Image.open(photo)))  # what imagehash users share
    with hm.Index.open(tmp_path / "db.hmdb", create=True) as index:
        report = import_hash_list(index, write(tmp_path, "ih.txt", hex_text + "\n"),
                                  algorithm="phash")
        assert len(report.added) == 1
        [[match]] = index.query_hashes([hm.hash_file(photo, "phash", exact=True)], "phash")
        assert match.distance == 0 and match.algorithm == "phash"
