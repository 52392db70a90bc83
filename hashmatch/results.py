"""What the Index hands back: a query's matches (:class:`Match`, :class:`QueryResult`) and
the per-file outcomes of adding files (:class:`AddOutcome`, :class:`AddReport`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .fingerprint import Fingerprint


@dataclass
class Match:
    """One stored item that matched a query, with the evidence of why."""

    item_id: int
    distance: int  # Hamming distance of the fingerprint pair that decided the match (the best)
    algorithm: str
    path: str | None
    source: str | None
    labels: list[str]
    meta: dict
    sha256: str | None
    query_region: str
    query_variant: str  # which rotation/flip of the query matched ("original" = as is)
    stored_region: str
    stored_variant: str
    query_quality: int | None
    stored_quality: int | None
    # What max_distance is compared with: distance plus the penalty for pairs that involve a
    # loosely cut region (hashmatch.policy.MatchPolicy.region_penalty); equal to distance otherwise.
    score: int | None = None
    # How strong the match is, decided by the verification stage (hashmatch.verify):
    # kind "copy" = the same picture (perhaps edited); "template" = a picture made from the
    # same template with other content (a lead, never a copy; only listed when asked for).
    kind: str = "copy"
    # True: the stored picture's own pixels confirmed it; False: the pixels disagree (only
    # template leads carry False); None: not verified (an item from a hash list, no pixels:
    # the plain-PDQ rule decided it).
    verified: bool | None = None
    # Plain words for an investigator, e.g. "same picture", "same picture, edited",
    # "same template, not a copy", "whole-image hash match (not verified: ...)".
    verdict: str = ""
    # The numbers behind the verdict (e.g. share of the picture that agrees, matched tiles).
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["evidence"] = dict(self.evidence)
        return out


@dataclass
class QueryResult:
    """The matches of one query file (or the reason it could not be read)."""

    path: str
    matches: list[Match] = field(default_factory=list)
    error: str | None = None
    sha256: str | None = None
    fingerprints: list[Fingerprint] = field(default_factory=list)


@dataclass
class AddOutcome:
    """One file of :meth:`Index.add_files`: added, duplicate, skipped or failed (with why)."""

    path: str
    status: str  # "added" | "duplicate" | "skipped" | "failed"
    item_id: int | None = None
    reason: str | None = None
    quality: int | None = None


@dataclass
class AddReport:
    """Per-file outcomes of :meth:`Index.add_files`, in input order."""

    outcomes: list[AddOutcome] = field(default_factory=list)

    def _with(self, status):
        return [o for o in self.outcomes if o.status == status]

    @property
    def added(self):
        return self._with("added")

    @property
    def duplicates(self):
        return self._with("duplicate")

    @property
    def skipped(self):
        return self._with("skipped")

    @property
    def failed(self):
        return self._with("failed")

    def counts(self) -> dict:
        return {s: len(self._with(s)) for s in ("added", "duplicate", "skipped", "failed")}
