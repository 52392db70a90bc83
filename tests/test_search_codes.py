"""Index.search_codes (arrays in and out) and query_hashes on top of it: exact, one entry per
item at its smallest distance, and the same matches as the per-needle search path."""
import numpy as np
import pytest

import hashmatch as hm
from hashmatch.index import FULL_REGION, Index
from hashmatch.needles import DIHEDRAL_VARIANTS, as_fingerprints, hash_variants
from hashmatch.store import ItemRecord


def brute(stored_items, stored_codes, queries, radius):
    """Per query: {item: smallest distance} over the stored full-frame rows."""
    d = np.unpackbits(queries[:, None, :] ^ stored_codes[None, :, :], axis=2).sum(axis=2)
    out = []
    for row in d:
        best = {}
        for item, dist in zip(stored_items, row):
            if dist <= radius:
                best[int(item)] = min(best.get(int(item), 999), int(dist))
        out.append(best)
    return out


@pytest.fixture
def index(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    idx = Index.open(str(tmp_path / "x.hmdb"), create=True)
    records = []
    for k in range(60):
        full = base[k % 40].copy()
        flip = rng.choice(256, rng.integers(0, 40), replace=False)
        bits = np.unpackbits(full)
        bits[flip] ^= 1
        fps = [("pdq", 256, FULL_REGION, "original", np.packbits(bits).tobytes(), 80)]
        if k % 3 == 0:  # a second full frame for some items, and regions / crops
            fps.append(("pdq", 256, FULL_REGION, "original",
                        rng.integers(0, 256, 32, dtype=np.uint8).tobytes(), 70))
            fps.append(("pdq", 256, "content", "original", base[(k + 1) % 40].tobytes(), 60))
            fps.append(("pdq", 256, "crop:0,0,10,10", "original", base[(k + 2) % 40].tobytes(),
                        60))
        records.append(ItemRecord(path=None, sha256=None, source="t", fingerprints=fps))
    idx.store.add_items(records)
    idx.sync()
    idx.remove([3, 7])
    yield idx
    idx.close()


def stored_full(idx):
    codes = idx.store.load_codes("pdq", 256)
    full = codes.regions == FULL_REGION
    return codes.item_ids[full], codes.codes[full]


@pytest.mark.parametrize("nq", [0, 1, 7])
@pytest.mark.parametrize("radius", [0, 20, 31, 60])
def test_search_codes_is_exact_per_item(index, nq, radius):
    rng = np.random.default_rng(nq + radius)
    items, codes = stored_full(index)
    queries = np.concatenate([codes[:nq // 2], rng.integers(0, 256, (nq - nq // 2, 32),
                                                            dtype=np.uint8)])
    lims, ids, dist = index.search_codes(queries, radius)
    assert lims.dtype == np.int64 and len(lims) == nq + 1 and lims[0] == 0
    assert ids.dtype == np.int64 and dist.dtype == np.int32 and len(ids) == lims[-1]
    expected = brute(items, codes, queries, radius)
    for q in range(nq):
        got_ids, got_d = ids[lims[q]:lims[q + 1]], dist[lims[q]:lims[q + 1]]
        assert dict(zip(got_ids.tolist(), got_d.tolist())) == expected[q]
        assert len(set(got_ids.tolist())) == len(got_ids)  # one entry per item
        assert list(zip(got_d, got_ids)) == sorted(zip(got_d, got_ids))


def test_search_codes_empty_index_and_unknown_algorithm(tmp_path):
    with Index.open(str(tmp_path / "e.hmdb"), create=True) as idx:
        lims, ids, dist = idx.search_codes(np.zeros((3, 32), np.uint8), 31)
        assert lims.tolist() == [0, 0, 0, 0] and len(ids) == len(dist) == 0
        with pytest.raises(ValueError):
            idx.search_codes(np.zeros(32, np.uint8), 31)


@pytest.mark.parametrize("dihedral", [False, True])
@pytest.mark.parametrize("top_k", [None, 2])
def test_query_hashes_equals_the_per_needle_search(index, dihedral, top_k):
    rng = np.random.default_rng(9)
    _, codes = stored_full(index)
    queries = np.concatenate([codes[:5], rng.integers(0, 256, (3, 32), dtype=np.uint8)])
    got = index.query_hashes(queries, max_distance=45, top_k=top_k, dihedral=dihedral)
    for q, fp in enumerate(as_fingerprints(queries, "pdq", None)):
        if dihedral:
            needles = [(hm.Fingerprint("pdq", b), FULL_REGION, name) for b, name in
                       zip(hash_variants(fp, True), DIHEDRAL_VARIANTS)]
        else:
            needles = [(fp, FULL_REGION, "original")]
        want = index._search(needles, 45, top_k, None, margin=0, use_regions=False)
        assert [m.to_dict() for m in got[q]] == [m.to_dict() for m in want]
