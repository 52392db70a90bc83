"""hashmatch.cluster against a brute-force numpy oracle (all pairs, then connected components)."""
import numpy as np
import pytest

import sys

import hashmatch as hm
from hashmatch.cluster import cluster, component_labels, pairs_within

clustering = sys.modules["hashmatch.cluster"]  # hashmatch.cluster is also the function's name

POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)


def oracle_distances(codes):
    return POPCOUNT8[codes[:, None, :] ^ codes[None, :, :]].sum(axis=-1)


def oracle_groups(codes, radius):
    """Connected components by repeated flooding of the full distance matrix."""
    adjacent = oracle_distances(codes) <= radius
    label = -np.ones(len(codes), int)
    for start in range(len(codes)):
        if label[start] >= 0:
            continue
        frontier = {start}
        while frontier:
            node = frontier.pop()
            label[node] = start
            frontier |= {int(j) for j in np.flatnonzero(adjacent[node]) if label[j] < 0}
    return {frozenset(np.flatnonzero(label == g).tolist()) for g in set(label)}


def planted(rng, n, nbytes=32, groups=8, group_size=5, max_flips=40):
    """Random codes with near-duplicate groups: copies of a base code with a few bits flipped."""
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    for g in range(groups):
        base = codes[g * group_size]
        for k in range(1, group_size):
            copy = base.copy()
            flips = rng.choice(nbytes * 8, rng.integers(0, max_flips), replace=False)
            np.bitwise_xor.at(copy, flips // 8, (1 << (flips % 8)).astype(np.uint8))
            codes[g * group_size + k] = copy
    codes[-1] = codes[0]  # an exact duplicate far away in input order
    return codes[rng.permutation(n)]


@pytest.mark.parametrize("seed,n,nbytes,radius", [(0, 200, 32, 31), (1, 150, 8, 10),
                                                    (2, 97, 32, 45), (3, 60, 8, 20)])
def test_pairs_match_the_oracle(seed, n, nbytes, radius):
    codes = planted(np.random.default_rng(seed), n, nbytes, max_flips=radius + 10)
    distances = oracle_distances(codes)
    want_i, want_j = np.nonzero(np.triu(distances <= radius, k=1))
    i, j, d = pairs_within(codes, radius)
    assert np.array_equal(i, want_i) and np.array_equal(j, want_j)
    assert np.array_equal(d, distances[want_i, want_j])


@pytest.mark.parametrize("path", ["scan", "mih"])
def test_both_search_paths_give_the_oracle_groups(monkeypatch, path):
    rng = np.random.default_rng(7)
    codes = planted(rng, 300, groups=20, max_flips=45)
    monkeypatch.setattr(clustering, "MIH_MIN_ROWS", 0 if path == "mih" else 10**9)
    monkeypatch.setattr(clustering, "QUERY_BLOCK", 64)  # several blocks
    if path == "mih":
        monkeypatch.setattr(clustering, "scan_cost", lambda *a, **k: float("inf"))
    calls = []
    for kernel in ("range_search", "mih_range_search_multi"):
        real = getattr(clustering._hamming, kernel)
        monkeypatch.setattr(clustering._hamming, kernel,
                            lambda *a, _real=real, _name=kernel, **k: calls.append(_name)
                            or _real(*a, **k))
    got = {frozenset(m.key for m in c.members) for c in cluster(codes, 31, min_size=1)}
    assert got == oracle_groups(codes, 31)
    expected = "mih_range_search_multi" if path == "mih" else "range_search"
    assert set(calls) == {expected} and len(calls) == 5  # 300 rows in blocks of 64


def test_representative_is_highest_quality_and_distances_are_real():
    rng = np.random.default_rng(3)
    codes = planted(rng, 120, groups=6, max_flips=30)
    qualities = rng.integers(0, 101, len(codes))
    distances = oracle_distances(codes)
    for c in cluster(codes, 31, qualities=qualities):
        keys = [m.key for m in c.members]
        rep = c.representative.key
        assert qualities[rep] == max(qualities[keys])
        assert rep == min(k for k in keys if qualities[k] == qualities[rep])  # ties: first
        assert [m.distance for m in c.members] == [int(distances[rep, k]) for k in keys]
        assert [m.distance for m in c.members[1:]] == sorted(m.distance for m in c.members[1:])
        assert c.size == len(set(keys)) >= 2


def test_fingerprints_chain_edits_and_singletons():
    base = hm.Fingerprint.from_hex("f" * 64)
    bits = np.unpackbits(base.bits)
    chain = []
    for flips in (0, 20, 40, 60):  # each step 20 bits from the last: one group via the chain
        b = bits.copy()
        b[:flips] ^= 1
        chain.append(hm.Fingerprint("pdq", np.packbits(b), quality=flips))
    lonely = hm.Fingerprint.from_hex("0" * 64, quality=100)
    groups = hm.cluster(chain + [lonely], max_distance=31)
    assert [c.size for c in groups] == [4]
    assert groups[0].representative.key == 3  # quality 60, the highest
    assert [m.distance for m in groups[0].members] == [0, 20, 40, 60]
    assert len(hm.cluster(chain + [lonely], max_distance=31, min_size=1)) == 2


def test_edge_cases():
    assert cluster([], 31) == []
    assert cluster([hm.Fingerprint.from_hex("ab" * 32)], 31) == []
    assert len(cluster(np.zeros((5, 8), np.uint8), 0)) == 1  # five identical codes
    assert component_labels(np.zeros((0, 8), np.uint8), np.empty(0, np.int64), 5).size == 0
    with pytest.raises(ValueError):
        cluster([hm.Fingerprint.from_hex("ab" * 32), hm.Fingerprint.from_hex("ab" * 8, "phash")])


def test_many_identical_codes_stay_cheap():
    codes = np.repeat(np.random.default_rng(0).integers(0, 256, (3, 32), np.uint8), 5000, axis=0)
    groups = cluster(codes, 31)
    assert sorted(c.size for c in groups) == [5000, 5000, 5000]


def test_cluster_an_index_groups_items(tmp_path):
    rng = np.random.default_rng(11)
    codes = planted(rng, 60, groups=4, max_flips=25)
    with hm.Index.open(tmp_path / "c.hmdb", create=True) as index:
        ids = index.add_hashes(codes, qualities=list(range(60)), source="list")
        groups = hm.cluster(index, max_distance=31)
    want = {frozenset(ids[k] for k in g) for g in oracle_groups(codes, 31) if len(g) > 1}
    assert {frozenset(m.key for m in c.members) for c in groups} == want
