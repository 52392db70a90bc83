"""Issue 16 items 11 and 13: hostile JSON in hash lists becomes FILE:LINE problems, and
Index.add_hashes validates exactly as import does (one validator)."""
import json

import pytest

import hashmatch as hm
from hashmatch.errors import HashFormatError
from hashmatch.hashlists import MAX_JSON_DEPTH, import_hash_list, parse_hash_list

H1, H2, H3 = ("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
              "30a10efd71c83f429013d48d0ffffc52e34e0e17ada952a9d29685211ea9e5af",
              "adad5a64b5a102e55b62a08856dacd5ae63b847fc337b4b766b319361bc93188")


def nested(depth: int, leaf="1") -> str:
    return "[" * depth + leaf + "]" * depth


def problems_of(text: str, name="list.jsonl"):
    parsed = parse_hash_list(text.encode(), name)
    return [(p.line, p.message) for p in parsed.problems]


# -- item 11 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("line, words", [
    ('{"hash": "%s", "labels": %s}' % (H1, nested(20000)), "nested"),
    ('{"hash": "%s", "meta": {"x": %s}}' % (H1, nested(20000)), "nested"),
    ('{"hash": "%s", "meta": {"x": %s}}' % (H1, nested(MAX_JSON_DEPTH + 1)), "nested"),
    ('{"hash": "%s", "size": %d}' % (H1, 10 ** 30), "size"),
    ('{"hash": "%s", "meta": {"n": %d}}' % (H1, 10 ** 30), "integer"),
    ('{"hash": "%s", "meta": {"n": %s}}' % (H1, "9" * 5000), "JSON"),
])
def test_hostile_json_values_are_reported_with_their_line(tmp_path, line, words):
    text = json.dumps({"hash": H2}) + "\n" + line + "\n"
    found = problems_of(text)
    assert len(found) == 1 and found[0][0] == 2 and words in found[0][1]
    path = tmp_path / "list.jsonl"
    path.write_text(text)
    with hm.Index.open(tmp_path / "x.hmdb", create=True) as index:
        report = import_hash_list(index, path)  # no RecursionError / OverflowError
        assert not report.imported and index.store.count_items() == 0


def test_deep_csv_meta_cell_is_a_problem_too():
    text = f'hash,meta\n{H1},"{{""x"": {nested(20000)}}}"\n'
    found = problems_of(text, "list.csv")
    assert found and found[0][0] == 2 and "nested" in found[0][1]


def test_nesting_and_integers_within_the_limits_import():
    meta = {"x": json.loads(nested(MAX_JSON_DEPTH - 2)), "n": 2 ** 63 - 1, "m": -2 ** 63}
    found = problems_of(json.dumps({"hash": H1, "meta": meta}) + "\n")
    assert found == []


# -- item 13 ----------------------------------------------------------------------------------
def _index(tmp_path):
    return hm.Index.open(tmp_path / "x.hmdb", create=True)


def test_add_hashes_refuses_a_meta_list_of_the_wrong_length(tmp_path):
    with _index(tmp_path) as index:
        with pytest.raises(HashFormatError, match="meta"):
            index.add_hashes([H1, H2, H3], meta=[{"case": "A"}])
        with pytest.raises(HashFormatError, match="qualities"):
            index.add_hashes([H1, H2, H3], qualities=[50])
        assert index.store.count_items() == 0


def test_add_hashes_one_label_string_is_one_label(tmp_path):
    with _index(tmp_path) as index:
        [item] = index.add_hashes([H1], labels="abc")
        assert index.store.get_items([item])[item].labels == ["abc"]


@pytest.mark.parametrize("options", [
    {"qualities": [500]}, {"qualities": [float("nan")]}, {"qualities": [-1]},
    {"source": "bad \udc80 surrogate"}, {"labels": ["ok", "\ud800"]},
    {"meta": {"x": json.loads(nested(MAX_JSON_DEPTH + 5))}}, {"meta": {"n": 10 ** 30}},
    {"meta": {"n": float("inf")}}, {"meta": "not a dict"}, {"labels": [1, 2]},
])
def test_add_hashes_validates_as_import_does(tmp_path, options):
    with _index(tmp_path) as index:
        with pytest.raises(HashFormatError):
            index.add_hashes([H1], **options)
        assert index.store.count_items() == 0


def test_import_refuses_what_add_hashes_refuses(tmp_path):
    line = json.dumps({"hash": H1, "source": "bad \udc80"}, ensure_ascii=True)
    found = problems_of(line + "\n")
    assert found and "surrogate" in found[0][1]


def test_add_hashes_valid_calls_still_work(tmp_path):
    with _index(tmp_path) as index:
        ids = index.add_hashes([H1, H2], qualities=[90, None], labels=["a"], source="s",
                               meta=[{"k": 1}, None])
        items = index.store.get_items(ids)
        assert [items[i].meta for i in ids] == [{"k": 1}, {}]
