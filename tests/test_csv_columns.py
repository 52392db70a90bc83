"""Issue 17: CSV headers from other tools are mapped (case-insensitive), unknown columns kept
in meta, the mapping reported; vPDQ video lists are named as such."""
import hashmatch as hm
from hashmatch.hashlists import import_hash_list, parse_hash_list

H1, H2 = ("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
          "30a10efd71c83f429013d48d0ffffc52e34e0e17ada952a9d29685211ea9e5af")


def parse(text, name="list.csv"):
    return parse_hash_list(text.encode(), name)


def test_unknown_columns_go_to_meta_and_path_aliases_map(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text(f"hash,filepath,colour\n{H1},/a/b.jpg,red\n")
    with hm.Index.open(tmp_path / "x.hmdb", create=True) as index:
        report = import_hash_list(index, path)
        assert report.imported and not report.problems
        [item] = index.store.get_items(report.added).values()
    assert item.path == "/a/b.jpg" and item.meta == {"colour": "red"}
    assert report.columns == {"hash": "hash", "filepath": "path", "colour": "meta.colour"}


def test_threatexchange_pdq_test_data_header_imports(tmp_path):
    # FilePath,Hash: the same picture's hash under several file names is not a duplicate
    text = f"FilePath,Hash\nimg/a.jpg,{H1}\nimg/a-copy.jpg,{H1}\nimg/b.jpg,{H2}\n"
    parsed = parse(text)
    assert not parsed.problems and [e.path for e in parsed.entries] == [
        "img/a.jpg", "img/a-copy.jpg", "img/b.jpg"]
    assert parsed.columns == {"FilePath": "path", "Hash": "hash"}


def test_header_names_are_case_insensitive_and_aliases_map():
    text = f"PDQ,Label,SOURCE,File\n{H1},ad,partner,/x.jpg\n"
    parsed = parse(text)
    [entry] = parsed.entries
    assert (entry.hash, entry.labels, entry.source, entry.path) == (H1, ["ad"], "partner",
                                                                    "/x.jpg")
    signal = parse(f"signal,labels\n{H2},a;b\n")
    assert signal.entries[0].hash == H2 and signal.entries[0].labels == ["a", "b"]


def test_a_csv_without_extension_is_detected_by_an_alias_header():
    parsed = parse(f"FilePath,Hash\nimg/a.jpg,{H1}\n", name="list")
    assert parsed.format == "csv" and parsed.entries[0].path == "img/a.jpg"


def test_vpdq_video_list_is_named_once(tmp_path):
    lines = "".join(f"{n},{H1 if n % 2 else H2},100,{n * 0.5:.3f}\n" for n in range(564))
    parsed = parse(lines, name="video.txt")
    assert len(parsed.problems) == 1
    assert "vPDQ video hash list" in parsed.problems[0].message
    assert "hashmatch matches images" in parsed.problems[0].message
