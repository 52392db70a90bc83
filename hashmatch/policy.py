"""Every threshold and default that decides whether a stored item matches a query, once.

``MatchPolicy()`` holds the measured defaults; :meth:`MatchPolicy.resolve` turns a query's
arguments (``None`` = the default) into the values the search uses, so the Index, the
search, clustering, the CLI's help and README state the same numbers (tests/test_policy.py
checks the help texts and README against ``MatchPolicy()``). The module-level names
elsewhere (``index.DEFAULT_MAX_DISTANCE``, ``regions.PDQ_MAX_DISTANCE`` ...) are aliases of
these values, kept for the code and scripts that import them.

Not here: the verifier's own figures (hashmatch.verify: how much of a picture must agree),
the alignment's search budget (hashmatch.regions ALIGN_*) and the region prefilter's
approximation (hashmatch.shard PREFILTER_*): they tune how a stage works, not what counts
as a match.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Thresholds:
    """What one search of one algorithm uses, every default filled in."""

    max_distance: int
    min_quality: int | None
    margin: int


@dataclass(frozen=True)
class MatchPolicy:
    # Industry defaults: PDQ matches at distance <= 31 of 256 (ThreatExchange, HMA); for the
    # 64-bit imagehash family, 10 is the usual "same picture" cut-off.
    # grid: the same picture re-encoded/resized stays within ~20 of 240 informative bits,
    # unrelated pictures sit at 100-120 (benchmarks/RESULTS.md, robustness section).
    # Also PDQ's own rule for items the verifier cannot check (hash-list entries): whole
    # image against whole image within the PDQ radius (plain_pdq_distance).
    max_distances: Mapping[str, int] = field(default_factory=lambda: _frozen(
        {"pdq": 31, "phash": 10, "dhash": 10, "ahash": 10, "grid": 20}))
    # What an algorithm without its own entry gets (the 64-bit family's cut-off).
    fallback_max_distance: int = 10

    # Recommended defaults for PDQ over regions (measured, benchmarks/RESULTS.md
    # "Robustness"): the best item must be within region_max_distance and, with a margin,
    # at least region_margin bits closer than any other item. Template-made images (ID cards
    # of one design, chat screenshots of one app) sit 10-25 bits from each other; a copy is
    # much closer to its source than to the source's siblings, a query of an unknown card of
    # the same design is about equally close to all of them. The margin test is only as good
    # as the database is dense: in a case folder of 40 photos the runner-up of an unrelated
    # query is far, and unrelated photos come as close as ~85 (tests/test_region_matching.py).
    # The default radius stays below that; a big database lets the margin test carry a wider
    # one (the benchmark's operating point is at 128). With verification the margin test is
    # off by default, and pairs up to region_margin beyond the radius are still collected
    # (alignment may bring them within it).
    region_max_distance: int = 76
    region_margin: int = 12
    # PDQ quality below this: the region carries too little information to match on (flat:
    # 0, near-empty page with one word: 5, smooth gradient: 44; every corpus photo, receipt
    # and generated advert: >= 90). Such fingerprints are stored and reported with their
    # quality but take no part in matching unless the query lowers min_quality. Measured: 50
    # or 80 changes recall by <= 0.001 on the benchmark. Dense text is NOT flagged by PDQ
    # quality (100); the margin test is what keeps text-heavy template images from flooding
    # results.
    region_min_quality: int = 50
    # Added to the distance of any pair involving an ``embedded`` region: loosely trimmed
    # regions of UI-heavy images (chat screenshots, posters) resemble each other; measured:
    # +14 bits raised recall at 1% false alarm on the --quick suite (see the ablation table).
    # "turned": the blind guesses of _straightened meet wrong items a few bits closer than the
    # other needles do, which broke the margin test of a cropped copy (quick suite, 6 bits:
    # crop_20 back to its recall without guesses at 1 % false alarm, rotate_5 -1 query of 41).
    # By name prefix: "embedded:1" pays it too.
    region_penalty: Mapping[str, int] = field(default_factory=lambda: _frozen(
        {"embedded": 14, "turned": 6}))
    # A pair this close is a match whatever else is near: it keeps near-duplicates in the
    # database (a photo and its re-encode) from cancelling each other in the margin test. Not
    # PDQ's usual 31: unknown posters of a known poster's template sit 28 bits from it (quick
    # suite: 31 -> 16 raised recall at 1 % false alarm from 0.725 to 0.756). Also: no
    # alignment when a pair is this close already.
    certain: int = 16
    # Stored items whose full frames are this close are one picture for the margin test.
    duplicate_distance: int = 8
    # Candidates verified per query (closest first): a copy is nearly always the closest item
    # or among the few closest (alignment already moved its pair); each costs ~1-3 ms.
    verify_candidates: int = 6

    @property
    def plain_pdq_distance(self) -> int:
        """PDQ's own rule (whole image against whole image, any rotation or flip): its
        usual radius, for the items no pixels can verify."""
        return self.max_distances["pdq"]

    def default_max_distance(self, algorithm: str | None, regions: bool = False) -> int:
        """What ``max_distance=None`` means for ``algorithm`` (``regions``: the region-aware
        PDQ query)."""
        if regions and algorithm == "pdq":
            return self.region_max_distance
        if algorithm is None:
            return self.fallback_max_distance
        return self.max_distances.get(algorithm, self.fallback_max_distance)

    def resolve(self, algorithm: str, regions: bool, max_distance: int | None = None,
                min_quality: int | None = None, margin: int | None = None) -> Thresholds:
        """The effective values of one search of ``algorithm`` (``regions``: the query
        searches PDQ regions too): the given ones, the defaults where None."""
        regional = bool(regions) and algorithm == "pdq"
        return Thresholds(
            max_distance=(self.default_max_distance(algorithm, regional)
                          if max_distance is None else max_distance),
            min_quality=(self.region_min_quality if min_quality is None and regional
                         else min_quality),
            margin=(self.region_margin if regional else 0) if margin is None else margin)


MATCH_POLICY = MatchPolicy()
