"""Sealed segments mapped from files (codeindex.segment_files): one copy per machine."""
import os

import numpy as np
import pytest

from hashmatch import codeindex
from hashmatch.codeindex import CodeIndex, segment_files


@pytest.fixture(autouse=True)
def small_segments(monkeypatch):
    monkeypatch.setattr(codeindex, "MIH_MIN_ROWS", 1000)
    monkeypatch.setattr(codeindex, "BUFFER_ROWS", 1000)


def data(n=3000, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32), dtype=np.uint8), np.arange(10, 10 + n, dtype=np.int64)


def results(idx, queries, radius=31):
    return [a.tolist() for a in idx.range_search(queries, radius)]


def files_in(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith(".seg")) if os.path.isdir(folder) \
        else []


def test_second_index_maps_the_first_ones_file_and_answers_the_same(tmp_path):
    codes, ids = data()
    queries = np.concatenate([codes[:20] ^ 1, data(10, 2)[0]])
    folder = str(tmp_path / "segs")
    first_files, second_files = segment_files(folder), segment_files(folder)
    with first_files:
        first = CodeIndex(256, method="mih")
        first.add(codes, ids)
    [written] = files_in(folder)
    with second_files:
        second = CodeIndex(256, method="mih")
        second.add(codes, ids)
    plain = CodeIndex(256, method="scan")
    plain.add(codes, ids)
    for idx, files in ((first, first_files), (second, second_files)):
        # the segment's codes and MIH tables are the file's (mapped), not a private copy
        assert files.used == {os.path.join(folder, written)} and idx.paths(31) == ["mih"]
        assert results(idx, queries) == results(plain, queries)
    # removals are a per-process mask over the mapped rows
    second.remove(ids[:5])
    plain.remove(ids[:5])
    assert results(second, codes[:5]) == results(plain, codes[:5])
    assert results(first, codes[:5])[1] != results(second, codes[:5])[1]
    # appends go to the in-process delta
    more, more_ids = data(50, 3)
    second.add(more, more_ids + 100_000)
    plain.add(more, more_ids + 100_000)
    assert results(second, more) == results(plain, more)


def test_corrupt_or_foreign_segment_file_is_rebuilt(tmp_path):
    codes, ids = data()
    folder = str(tmp_path / "segs")
    with segment_files(folder):
        CodeIndex(256, method="mih").add(codes, ids)
    [name] = files_in(folder)
    path = os.path.join(folder, name)
    with open(path, "r+b") as f:
        f.seek(-3, os.SEEK_END)
        f.write(b"\xff\xff\xff")
    with segment_files(folder):
        idx = CodeIndex(256, method="mih")
        idx.add(codes, ids)
    plain = CodeIndex(256, method="scan")
    plain.add(codes, ids)
    assert results(idx, codes[:30] ^ 3) == results(plain, codes[:30] ^ 3)
    # a file renamed to another content's key is refused (its header names its own key)
    other, other_ids = data(2000, 5)
    with segment_files(folder):
        CodeIndex(256, method="mih").add(other, other_ids)
    names = files_in(folder)
    assert len(names) == 1  # the files the latest load did not use are removed
    os.replace(os.path.join(folder, names[0]), path)
    with segment_files(folder):
        idx = CodeIndex(256, method="mih")
        idx.add(codes, ids)
    assert results(idx, codes[:30] ^ 3) == results(plain, codes[:30] ^ 3)


def test_without_a_folder_nothing_is_written(tmp_path):
    codes, ids = data()
    with segment_files(None):
        idx = CodeIndex(256, method="mih")
        idx.add(codes, ids)
    assert idx.paths(31) == ["mih"]  # the tables are built in memory instead
    assert list(tmp_path.iterdir()) == []


def test_two_indexes_on_one_store_share_the_segment_file(tmp_path, monkeypatch):
    from hashmatch.index import Index

    codes, _ = data(3000, 7)
    queries = codes[:50].copy()
    queries[:, 0] ^= 1  # one bit from items 1..50
    path = str(tmp_path / "case.hmdb")
    with Index.open(path, create=True, regions=False) as idx:
        idx.add_hashes(codes)
    folder = path + ".codes.segments"
    inodes = []
    for _ in range(2):  # the first open builds and writes the file, the second maps it
        with Index.open(path, regions=False) as idx:
            lims, ids, dist = idx.search_codes(queries, 31)
            assert lims.tolist() == list(range(51)) and ids.tolist() == list(range(1, 51))
            assert set(dist.tolist()) == {1}
        [name] = files_in(folder)
        inodes.append(os.stat(os.path.join(folder, name)).st_ino)
    assert inodes[0] == inodes[1]  # taken as it is: a rebuilt file is renamed over it
    with Index.open(path, regions=False) as idx, Index.open(path, regions=False) as other:
        idx.remove([1, 2])  # the mask is this process's; the other index syncs its own
        assert idx.search_codes(queries[:3], 31)[1].tolist() == [3]
        assert other.search_codes(queries[:3], 31)[1].tolist() == [1, 2, 3]
        other.sync()
        assert other.search_codes(queries[:3], 31)[1].tolist() == [3]
