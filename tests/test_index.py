"""The Index: add, query, remove, persist, sync — what a platform pipeline relies on."""
import multiprocessing
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

import hashmatch as hm
from hashmatch.index import Index
from hashmatch._hamming_ref import distance_matrix as reference_distances
from conftest import CORPUS, PDQ_REF

PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))


@pytest.fixture
def known(tmp_path):
    folder = tmp_path / "known"
    folder.mkdir()
    for p in PHOTOS[:20]:
        shutil.copy(p, folder / p.name)
    return sorted(folder.iterdir())


@pytest.fixture
def index(tmp_path, known):
    with Index.open(tmp_path / "case.hmdb", create=True) as idx:
        report = idx.add_files(known, labels=["ad"], source="referral 7", workers=2)
        assert report.counts() == {"added": 20, "duplicate": 0, "skipped": 0, "failed": 0}
        yield idx


def _edited(tmp_path, original, name, edit):
    path = tmp_path / name
    edit(Image.open(original).convert("RGB")).save(path, quality=70)
    return path


@pytest.mark.parametrize("edit, variant", [
    (lambda im: im.resize((im.width // 2, im.height // 2)), "original"),
    (lambda im: ImageOps.mirror(im), "flipy"),
    (lambda im: im.rotate(90, expand=True), None),
    (lambda im: ImageOps.autocontrast(im, cutoff=2), "original"),
])
def test_edited_copy_finds_its_original_first(index, known, tmp_path, edit, variant):
    query = _edited(tmp_path, known[3], "suspect.jpg", edit)
    matches = index.query(query)
    assert matches, "the original should match"
    best = matches[0]
    assert best.path == str(known[3]) and best.distance <= 31
    assert best.labels == ["ad"] and best.source == "referral 7"
    assert best.algorithm == "pdq" and best.query_quality is not None
    assert len(best.sha256) == 64
    if variant:
        assert best.query_variant == variant
    assert [m.distance for m in matches] == sorted(m.distance for m in matches)


def test_unrelated_image_does_not_match(index):
    assert index.query(PHOTOS[100]) == []


def test_duplicates_failures_and_skips_are_reported_per_file(index, known, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(known[0].read_bytes()[:3000])
    flat = tmp_path / "flat.png"
    Image.new("RGB", (300, 300), (128, 128, 128)).save(flat)
    report = index.add_files([known[0], broken, PHOTOS[50], flat], min_quality=30)
    statuses = [(o.status, o.path) for o in report.outcomes]
    assert statuses == [("duplicate", str(known[0])), ("failed", str(broken)),
                        ("added", str(PHOTOS[50])), ("skipped", str(flat))]
    assert report.failed[0].reason.startswith("truncated")
    assert report.outcomes[0].item_id == index.query(known[0])[0].item_id
    assert len(index) == 21


def test_removed_item_never_matches_again(index, known, tmp_path):
    target = index.query(known[5])[0]
    assert index.remove(target.item_id) == 1
    assert all(m.item_id != target.item_id for m in index.query(known[5]))
    assert len(index) == 19
    path = index.path
    index.close()
    with Index.open(path) as reopened:
        assert all(m.item_id != target.item_id for m in reopened.query(known[5]))


def test_reopen_gives_same_results_with_or_without_a_valid_cache(index, known, tmp_path):
    before = [(m.item_id, m.distance) for m in index.query(known[7])]
    path = index.path
    index.close()
    with Index.open(path) as reopened:  # from the cache written at close
        assert [(m.item_id, m.distance) for m in reopened.query(known[7])] == before
    cache_files = [p for p in tmp_path.iterdir() if p.name.startswith("case.hmdb.")
                   and not p.name.endswith(("-wal", "-shm"))]
    assert cache_files, "closing should leave a codes cache beside the database"
    for cache in cache_files:
        data = bytearray(cache.read_bytes())
        data[-5] ^= 0xFF
        cache.write_bytes(bytes(data))
    with Index.open(path) as rebuilt:  # corrupt cache: detected, rebuilt from the store
        assert [(m.item_id, m.distance) for m in rebuilt.query(known[7])] == before


def test_hash_lists_without_images(tmp_path):
    haystack = (PDQ_REF / "hashlists" / "haystack.txt").read_text().split()
    needles = (PDQ_REF / "hashlists" / "needles.txt").read_text().split()
    with Index.open(tmp_path / "list.hmdb", create=True) as idx:
        ids = idx.add_hashes(haystack, algorithm="pdq", source="partner list")
        assert len(ids) == len(set(haystack)) or len(ids) == len(haystack)
        results = idx.query_hashes(needles, max_distance=31)
    hay = np.stack([np.frombuffer(bytes.fromhex(h), np.uint8) for h in haystack])
    ned = np.stack([np.frombuffer(bytes.fromhex(h), np.uint8) for h in needles])
    truth = reference_distances(ned, hay)
    id_of_row = dict(zip(range(len(haystack)), ids))
    for q, matches in enumerate(results):
        expected = {id_of_row[j] for j in np.nonzero(truth[q] <= 31)[0]}
        assert {m.item_id for m in matches} == expected
        for m in matches:
            assert m.path is None and m.source == "partner list"


def test_one_item_index_works(tmp_path):
    # python-threatexchange's PDQ index mishandled a 1-hash list; this one must not.
    h = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    with Index.open(tmp_path / "one.hmdb", create=True) as idx:
        [item] = idx.add_hashes([h])
        assert [m.item_id for m in idx.query_hashes([h])[0]] == [item]
        flipped = ("07" + h[2:])
        assert idx.query_hashes([flipped], max_distance=8)[0][0].distance == 8
        assert idx.query_hashes([flipped], max_distance=7)[0] == []


def test_empty_index_answers_no_match(tmp_path):
    with Index.open(tmp_path / "empty.hmdb", create=True) as idx:
        assert len(idx) == 0 and idx.query(PHOTOS[0]) == []


def test_query_many_keeps_order_and_reports_errors(index, known, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    results = index.query_many([known[1], bad, PHOTOS[100], known[2]], workers=2)
    assert [r.path for r in results] == [str(known[1]), str(bad), str(PHOTOS[100]), str(known[2])]
    assert results[0].matches[0].path == str(known[1])
    assert results[1].error.startswith("not an image")
    assert results[2].matches == []
    assert results[3].matches[0].path == str(known[2])


def _add_in_other_process(path, photo):
    with Index.open(path) as idx:
        idx.add_files([photo], source="other process")


def test_sync_picks_up_another_processes_changes(index):
    context = multiprocessing.get_context("spawn")
    proc = context.Process(target=_add_in_other_process, args=(index.path, str(PHOTOS[60])))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    assert index.query(PHOTOS[60]) == []  # not yet seen
    assert index.sync() >= 1
    [match] = index.query(PHOTOS[60])
    assert match.source == "other process" and match.distance == 0


def test_stats_and_len(index):
    stats = index.stats()
    assert stats["path"] == index.path
    assert len(index) == 20


def test_hash_only_queries_can_find_mirrored_copies(tmp_path):
    original = np.asarray(Image.open(PHOTOS[11]).convert("RGB"))
    mirrored = original[:, ::-1]
    stored = hm.hash_image(original, exact=True)
    query = hm.hash_image(mirrored, exact=True)
    assert query - stored > 31  # as is, the mirror is a different hash
    with Index.open(tmp_path / "list.hmdb", create=True) as idx:
        [item] = idx.add_hashes([stored.hex()])
        assert idx.query_hashes([query]) == [[]]
        [[match]] = idx.query_hashes([query], dihedral=True)
        assert match.item_id == item and match.query_variant == "flipy"
