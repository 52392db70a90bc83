"""hashmatch.search.search_shard (one scan per stored role, crop windows through the
low-frequency prefilter) equals a brute-force search over every stored row on small random
shards."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashmatch import shard as hm_shard
from hashmatch import regions as rg
from hashmatch._hamming import distance_matrix
from hashmatch.fingerprint import Fingerprint
from hashmatch.search import collect_pairs, duplicate_groups, search_shard, usable_needles
from hashmatch.shard import Shard

STORED = ["full", "content", "embedded", "crop:l12", "crop:t12", "crop:r12", "crop:b12"]
QUERY = [("full", v) for v in ("original", "rot90", "rot180", "flipy")] + [
    ("content", "original"), ("content", "flipy"), ("embedded", "original"),
    ("embedded:1", "flipy"), ("framed:1", "original"), ("deskewed", "original"), ("turned:+2.5", "original")]


def _near(code, rng, bits):
    flips = np.zeros(256, bool)
    flips[rng.choice(256, bits, replace=False)] = True
    return code ^ np.packbits(flips, bitorder="little")


def _low_frequency_bits(codes):
    """The signs of the 8x8 lowest-frequency DCT coefficients, from PDQ's definition (bit
    k = 16 i + j of the sign matrix): (n, 64) 0/1."""
    a = np.unpackbits(np.atleast_2d(codes), axis=1)[:, ::-1].reshape(-1, 16, 16)
    return a[:, :8, :8].reshape(len(a), 64).astype(np.int64)


def _low_distances(stored, needles, side=8):
    """Distances over the signs of the side x side lowest DCT coefficients (8: the 64-bit
    prefilter code, 4: its 16-bit bucket key)."""
    def bits(codes):
        return _low_frequency_bits(codes).reshape(-1, 8, 8)[:, :side, :side].reshape(
            -1, side * side)
    return np.abs(bits(stored)[:, None, :] - bits(needles)[None, :, :]).sum(-1)


def _near_split(code, rng, low_bits, other_bits, key_bits=0):
    """``code`` with ``key_bits`` of the 16 signs of its 4x4 lowest DCT coefficients (the
    bucket key), ``low_bits`` of the other 48 of its 8x8 lowest and ``other_bits`` of the
    other 192 flipped."""
    flips = np.zeros((16, 16), bool)
    low, key = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    low[:8, :8] = True
    key[:4, :4] = True
    flips.flat[rng.choice(np.flatnonzero(key), key_bits, replace=False)] = True
    flips.flat[rng.choice(np.flatnonzero(low & ~key), low_bits, replace=False)] = True
    flips.flat[rng.choice(np.flatnonzero(~low), other_bits, replace=False)] = True
    packed = np.packbits(flips.reshape(256)[::-1])  # the inverse of _low_frequency_bits' unpack
    return code ^ packed


@st.composite
def shards(draw):
    """A shard of 1-30 items (full frame + some regions and crop windows each, item order
    or shuffled, some removed, some of low quality) whose rows lie at many distances from
    the query's needles, and the needles."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    needles = [(Fingerprint("pdq", rng.integers(0, 256, 32, dtype=np.uint8),
                            int(rng.choice([100, 100, 100, 30]))), region, variant)
               for region, variant in QUERY[: draw(st.integers(1, len(QUERY)))]]
    n_items = draw(st.integers(1, 30))
    fp_ids, items, codes, names, qualities = [], [], [], [], []
    for item in range(n_items):
        kinds = ["full"] + [name for name in STORED[1:] if rng.random() < 0.5]
        for name in kinds:
            anchor = needles[rng.integers(0, len(needles))][0].bits
            code = _near(anchor, rng, int(rng.choice([0, 5, 20, 40, 60, 80, 90, 100, 128])))
            fp_ids.append(len(fp_ids))
            items.append(item)
            codes.append(code)
            names.append(name)
            qualities.append(int(rng.choice([100, 100, 100, 20, -1])))
    order = rng.permutation(len(fp_ids)) if draw(st.booleans()) else np.arange(len(fp_ids))
    shard = Shard("pdq", 256)
    shard.append(np.asarray(fp_ids)[order], np.asarray(items)[order],
                 np.asarray(codes)[order], np.asarray(names, object)[order],
                 np.full(len(fp_ids), "original", object), np.asarray(qualities)[order])
    if n_items > 2 and draw(st.booleans()):
        shard.remove_items([0])
    return shard, needles


def brute_force(shard, needles, max_distance, margin, min_quality, use_regions,
                prefilter=None):
    """Item -> best score, from every (needle, live row) pair, then the decision rule.
    ``prefilter``: role -> (threshold, key radius) (default shard.PREFILTER_THRESHOLD and
    PREFILTER_KEY_RADIUS): in the region-aware search, a pair with a row of that role counts
    only when their distance over the 8x8 lowest DCT signs is within the threshold and over
    the 4x4 lowest within the key radius; plain-PDQ searches (use_regions False) are exact."""
    if prefilter is None:
        prefilter = {role: (threshold, hm_shard.PREFILTER_KEY_RADIUS.get(role, 16))
                     for role, threshold in hm_shard.PREFILTER_THRESHOLD.items()}
    if not use_regions:
        prefilter = {}
    if max_distance is None:
        max_distance = rg.PDQ_MAX_DISTANCE if use_regions else 31
    if margin is None:
        margin = rg.PDQ_MARGIN if use_regions else 0
    if min_quality is None and use_regions:
        min_quality = rg.MIN_QUALITY
    radius = min(256, max_distance + margin)
    needles = [n for n in needles if min_quality is None or n[0].quality >= min_quality]
    rows = np.nonzero(shard.live[:shard.n])[0]
    if min_quality is not None:
        q = shard.qualities[rows]
        rows = rows[(q < 0) | (q >= min_quality)]
    if not needles or not len(rows):
        return {}
    stored = shard.codes_of(rows)
    needle_codes = np.stack([fp.bits for fp, _, _ in needles])
    dist = distance_matrix(stored, needle_codes).astype(int)
    low = _low_distances(stored, needle_codes)
    key = _low_distances(stored, needle_codes, side=4)
    best = {}
    for i, row in enumerate(rows):
        name = shard.names[shard.region_codes[row]]
        for k, (_, region, variant) in enumerate(needles):
            role = rg.stored_role(name)
            if role not in rg.search_roles(region, variant) or dist[i, k] > radius:
                continue
            if role in prefilter and (low[i, k] > prefilter[role][0]
                                      or key[i, k] > prefilter[role][1]):
                continue
            penalty = max(rg.region_penalty(name), rg.region_penalty(region)) if use_regions else 0
            item = int(shard.item_ids[row])
            best[item] = min(best.get(item, 1 << 30), int(dist[i, k]) + penalty)
    if not best:
        return {}
    items = np.array(sorted(best))
    scores = np.array([best[i] for i in items])
    if margin <= 0:
        keep = scores <= max_distance
    else:
        groups = np.arange(len(items))
        contenders = np.nonzero(scores < scores.min() + margin)[0]
        if len(contenders) > 1:
            full = shard.full_rows_of(items[contenders], np.full(len(contenders), -1))
            assert (full >= 0).all()
            groups[contenders] = contenders[duplicate_groups(shard.codes_of(full))]
        keep = rg.select_matches(scores[None], max_distance, margin, groups=groups[None])[0]
    return {int(i): int(s) for i, s in zip(items[keep], scores[keep])}


def _scores(found):
    return {item: evidence.score for item, evidence in found.items()}


@settings(max_examples=150, deadline=None)
@given(shards(), st.sampled_from([None, 0, 31, 76, 100, 128, 256]),
       st.sampled_from([None, 0, 12]), st.sampled_from([None, 0]), st.booleans())
def test_search_equals_brute_force(shard_needles, max_distance, margin, min_quality,
                                   use_regions):
    shard, needles = shard_needles
    got = search_shard(shard, "pdq", needles, max_distance, min_quality, margin, use_regions)
    assert _scores(got) == brute_force(shard, needles, max_distance, margin, min_quality,
                                       use_regions)
    for evidence in got.values():
        # the evidence is a real pair of the search
        assert rg.stored_role(evidence.stored_region) in rg.search_roles(
            evidence.query_region, evidence.query_variant)
        assert 0 <= evidence.distance <= 256


@settings(max_examples=60, deadline=None)
@given(shards(), st.sampled_from([None, 76, 128]))
def test_a_prefilter_threshold_covering_every_code_is_the_exhaustive_search(
        monkeypatch_module, shard_needles, max_distance):
    """With a low-frequency threshold of 64 bits every row reaches the second stage:
    the two-stage search finds exactly what the exhaustive search over every pair finds,
    with the same exact distances."""
    shard, needles = shard_needles
    monkeypatch_module.setattr(hm_shard, "PREFILTER_THRESHOLD", {"crop": 64, "region": 64})
    monkeypatch_module.setattr(hm_shard, "PREFILTER_KEY_RADIUS", {"crop": 16, "region": 16})
    try:
        got = search_shard(shard, "pdq", needles, max_distance, None, None, True)
    finally:
        monkeypatch_module.undo()
    assert _scores(got) == brute_force(shard, needles, max_distance, None, None, True,
                                       prefilter={})


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _one_item_shard(rows):
    """Item 7 with the given (region name, code) rows, plus 50 unrelated items."""
    rng = np.random.default_rng(3)
    names = [name for name, _ in rows] + ["full"] * 50
    codes = [code for _, code in rows] + list(rng.integers(0, 256, (50, 32), dtype=np.uint8))
    items = [7] * len(rows) + list(range(100, 150))
    shard = Shard("pdq", 256)
    shard.append(np.arange(len(names)), items, np.asarray(codes), np.asarray(names, object),
                 np.full(len(names), "original", object), np.full(len(names), 100))
    return shard


def test_an_item_whose_crop_window_is_the_only_close_row_matches(monkeypatch):
    rng = np.random.default_rng(1)
    query = rng.integers(0, 256, 32, dtype=np.uint8)
    far = [_near(query, rng, 120), _near(query, rng, 118)]
    shard = _one_item_shard([("full", far[0]), ("content", far[1]),
                             ("crop:l12", _near(query, rng, 30)),
                             ("crop:r12", _near(query, rng, 125))])
    needles = [(Fingerprint("pdq", query, 100), "full", "original"),
               (Fingerprint("pdq", _near(query, rng, 128), 100), "full", "rot90")]
    found = search_shard(shard, "pdq", needles, None, None, None, True)
    assert list(found) == [7]
    evidence = found[7]
    assert (evidence.distance, evidence.query_region, evidence.query_variant,
            evidence.stored_region) == (30, "full", "original", "crop:l12")
    # a rotated needle never meets crop windows
    rotated = [(Fingerprint("pdq", query, 100), "full", "rot90")]
    assert search_shard(shard, "pdq", rotated, None, None, None, True) == {}


def test_crop_window_match_needs_its_low_frequency_bits_close_too(monkeypatch):
    """A crop window 60 bits from the query is found with that exact distance when 12 of the
    60 are low-frequency bits (<= PREFILTER_THRESHOLD), 3 of them in the 4x4 key (<=
    PREFILTER_KEY_RADIUS); one equally far whose coarse structure differs (30 low-frequency
    bits) is not, nor one with only 10 low-frequency bits but 6 of them in the key (its
    bucket is not read): the prefilter's approximations. The exhaustive search (thresholds
    covering every bit) finds all three."""
    rng = np.random.default_rng(2)
    query = rng.integers(0, 256, 32, dtype=np.uint8)
    near_low = _near_split(query, rng, 9, 48, key_bits=3)
    far_low = _near_split(query, rng, 30, 30)
    far_key = _near_split(query, rng, 4, 50, key_bits=6)
    stored = np.stack([near_low, far_low, far_key])
    assert _low_distances(stored, query[None])[:, 0].tolist() == [12, 30, 10]
    assert _low_distances(stored, query[None], side=4)[:, 0].tolist() == [3, 0, 6]
    assert hm_shard.PREFILTER_THRESHOLD["crop"] == 15
    assert hm_shard.PREFILTER_KEY_RADIUS["crop"] == 4
    needles = [(Fingerprint("pdq", query, 100), "full", "original")]
    for code, expected in ((near_low, [7]), (far_low, []), (far_key, [])):
        shard = _one_item_shard([("full", _near(query, rng, 125)), ("crop:t12", code)])
        found = search_shard(shard, "pdq", needles, None, None, None, True)
        assert list(found) == expected
        if expected:
            assert found[7].stored_region == "crop:t12" and found[7].distance == 60
        # a plain-PDQ search (whole images) at the same radius is exact
        found = search_shard(shard, "pdq", needles, 88, None, 0, False)
        assert list(found) == [7] and found[7].distance == 60
        monkeypatch.setattr(hm_shard, "PREFILTER_THRESHOLD", {"crop": 64})
        monkeypatch.setattr(hm_shard, "PREFILTER_KEY_RADIUS", {"crop": 16})
        found = search_shard(shard, "pdq", needles, None, None, None, True)
        assert list(found) == [7] and found[7].stored_region == "crop:t12" and found[7].distance == 60
        monkeypatch.undo()


def test_crop_window_codes_follow_adds_and_removes():
    """The low-frequency codes are kept with the rows: a removed item's crop window is never
    returned, not even while its codes are tombstones, and the item added back is found."""
    rng = np.random.default_rng(5)
    query = rng.integers(0, 256, 32, dtype=np.uint8)
    needles = [(Fingerprint("pdq", query, 100), "full", "original")]
    window = _near_split(query, rng, 4, 20)
    shard = _one_item_shard([("full", _near(query, rng, 120)), ("crop:l6", window)])
    assert list(search_shard(shard, "pdq", needles, None, None, None, True)) == [7]
    shard.remove_items([7])
    assert search_shard(shard, "pdq", needles, None, None, None, True) == {}
    # others' crop windows (and a near one of another item) arrive after the remove
    others = [_near(query, rng, 128) for _ in range(40)] + [_near_split(query, rng, 6, 30)]
    start = shard.fp_ids[shard.n - 1] + 1
    shard.append(np.arange(start, start + 41), np.arange(300, 341), np.asarray(others),
                 np.full(41, "crop:b6", object), np.full(41, "original", object),
                 np.full(41, 100))
    found = search_shard(shard, "pdq", needles, None, None, None, True)
    assert list(found) == [340] and found[340].distance == 36
    shard.remove_items([340])
    shard.append([start + 41, start + 42], [7, 7], np.stack([_near(query, rng, 120), window]),
                 np.array(["full", "crop:l6"], object), np.full(2, "original", object),
                 np.full(2, 100))
    found = search_shard(shard, "pdq", needles, None, None, None, True)
    assert list(found) == [7] and found[7].distance == 24 and found[7].stored_region == "crop:l6"
    assert len(shard.codes.parts["crop"]) == 41


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 80), st.integers(0, 2**32 - 1))
def test_duplicate_groups_are_the_components_of_near_pairs(n, seed):
    """Same partition as the general clustering (hashmatch.cluster), on chains of near
    codes, duplicates and unrelated codes."""
    from hashmatch.cluster import component_labels

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    for i in range(1, n):
        if rng.random() < 0.5:  # near (or equal to) an earlier code: chains form
            codes[i] = _near(codes[rng.integers(0, i)], rng, int(rng.choice([0, 4, 8, 9])))
    got = duplicate_groups(codes)
    expected = component_labels(codes, np.arange(n), rg.DUPLICATE_DISTANCE, threads=1)
    # the same partition: equal labels exactly where the reference's are equal
    assert ((got[:, None] == got[None, :]) == (expected[:, None] == expected[None, :])).all()
    if n <= 64:
        assert (got[got] == got).all()  # the small-set path labels by the group's first row


def test_searching_only_boxes_below_the_quality_floor_finds_nothing_instead_of_failing():
    """Issue 16: when every aligned box of a query was below the quality floor, the second
    search returned {} where its caller unpacked a tuple (KeyError: 0 in query_many): the
    search again of aligned boxes collects no pair, and the search finds nothing."""
    rng = np.random.default_rng(5)
    query = rng.integers(0, 256, 32, dtype=np.uint8)
    shard = _one_item_shard([("full", _near(query, rng, 4))])
    flat = [(Fingerprint("pdq", query, 10), "content+aligned", "original")]
    assert len(collect_pairs(shard, usable_needles(flat, 50), 88, 50, True)) == 0
    assert search_shard(shard, "pdq", flat, 88, 50, 0, True) == {}


def test_one_query_that_fails_in_the_search_costs_only_itself(tmp_path, monkeypatch):
    import hashmatch as hm
    from conftest import CORPUS

    photos = sorted((CORPUS / "photos").glob("*.jpg"))[:3]
    with hm.Index.open(tmp_path / "q.hmdb", create=True) as index:
        index.add_files(photos, workers=1)
        real = index._search
        calls = []

        def flaky(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyError(0)
            return real(*args, **kwargs)

        monkeypatch.setattr(index, "_search", flaky)
        results = index.query_many(photos, workers=1)
    assert [bool(r.matches) for r in results] == [True, False, True]
    assert results[1].error and "KeyError" in results[1].error
