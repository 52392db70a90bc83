"""Region names: the one spelling of the rectangles hashmatch fingerprints, and their roles.

A region's name is stored with every fingerprint row (databases of earlier versions hold
them, so the spellings never change), returned in ``Match.query_region`` /
``Match.stored_region``, and read back by the search (which stored rows a needle meets,
the penalty of loosely cut regions), the verifier (where a stored region lies) and the
outputs (how a match was found, in words). :class:`RegionName` is the only place that
writes or reads that spelling:

- ``full``, ``content``, ``embedded``: the whole frame, borders trimmed, the picture cut out
  of a screenshot, post or meme (stored and queried).
- ``content:N``, ``embedded:N`` (query side): the N-th earlier step of that trimming;
  ``framed:N``: the N-th rectangle framed by straight edges.
- ``crop:<sides><percent>`` (stored side): a crop window, ``percent`` % of the content
  region cut off each of ``sides`` (letters of ``ltrb``: ``crop:l12``, ``crop:lt6``; earlier
  versions stored ``crop:rt6``, ``crop:lb6`` too).
- ``deskewed``, ``straightened``, ``turned:<angle>`` (query side): turned-back copies of a
  picture turned a few degrees (``turned:+2.5``: a guessed angle, PIL's sign).
- any query name + ``+aligned``: the query's box was moved onto the stored picture before
  the pair was compared (:class:`hashmatch.regions.Aligner`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

from ..errors import HashmatchError

# A query box moved onto the stored picture before comparing (Aligner).
ALIGNED_SUFFIX = "+aligned"

# Kinds without anything after them, kinds numbered ":N", and the two with a detail.
PLAIN_KINDS = ("full", "content", "embedded", "deskewed", "straightened")
STEPPED_KINDS = ("content", "embedded", "framed")
CROP_KIND = "crop"
TURNED_KIND = "turned"
CROP_SIDES = "ltrb"

_STEP = re.compile(r"[1-9][0-9]*")
_CROP = re.compile(r"([ltrb]{1,4})(0|[1-9][0-9]*)")
_ANGLE = re.compile(r"[+-][0-9.e+-]+")
_EXAMPLES = ("full, content, embedded:1, framed:2, crop:lt6, deskewed, straightened, "
             "turned:+2.5, each optionally with +aligned")


class RegionNameError(HashmatchError, ValueError):
    """Text that is not a region name hashmatch writes (or not in its one spelling)."""


@dataclass(frozen=True)
class RegionName:
    """A region's name as a value: :meth:`parse` reads the stored/shown text, ``str()``
    writes it, and ``RegionName.parse(str(name)) == name`` for every name."""

    kind: str  # "full", "content", "embedded", "framed", "crop", "deskewed", ...
    step: int | None = None  # content:N, embedded:N, framed:N
    crop_sides: str = ""  # crop:<sides><percent>: the sides cut, in the stored order
    crop_percent: int | None = None
    angle: float | None = None  # turned:<angle>, degrees as PIL's rotate takes them
    aligned: bool = False  # the query box was moved onto the stored picture

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise RegionNameError(problem)

    def _problem(self) -> str | None:
        if self.kind == CROP_KIND:
            if self.crop_percent is None or self.crop_percent < 0:
                return "a crop window needs a share cut, in percent"
            if not self.crop_sides or set(self.crop_sides) - set(CROP_SIDES) or \
                    len(set(self.crop_sides)) != len(self.crop_sides):
                return f"a crop window cuts distinct sides of {CROP_SIDES!r}"
        elif self.crop_sides or self.crop_percent is not None:
            return "only a crop window has sides cut"
        if (self.kind == TURNED_KIND) != (self.angle is not None):
            return "a turned copy, and only a turned copy, has an angle"
        if self.step is not None and (self.kind not in STEPPED_KINDS or self.step < 1):
            return f"only {', '.join(STEPPED_KINDS)} are numbered, from 1"
        if self.step is None and self.kind not in PLAIN_KINDS + (CROP_KIND, TURNED_KIND):
            return f"kind {self.kind!r} is not one hashmatch makes" if \
                self.kind not in STEPPED_KINDS else f"{self.kind} needs its number"
        return None

    @classmethod
    def parse(cls, text: str) -> "RegionName":
        """The name ``text`` spells; :class:`RegionNameError` (a ValueError) when it is not
        one hashmatch writes, in that spelling."""
        if not isinstance(text, str):
            raise RegionNameError(f"a region name is text, not {type(text).__name__}: {text!r}")
        return _parse(text)

    @classmethod
    def try_parse(cls, text: str) -> "RegionName | None":
        """:meth:`parse`, or None for text that is not a region name: what a store holds
        may come from a hash list made elsewhere (any text), which the search takes as a
        plain region without a role of its own."""
        try:
            return cls.parse(text)
        except RegionNameError:
            return None

    @classmethod
    def crop_window(cls, sides: str, percent: int) -> "RegionName":
        return cls(CROP_KIND, crop_sides=sides, crop_percent=percent)

    @classmethod
    def turned(cls, angle: float) -> "RegionName":
        return cls(TURNED_KIND, angle=float(angle))

    def with_aligned(self) -> "RegionName":
        """The name of this region's box moved onto a stored picture."""
        return replace(self, aligned=True)

    def without_aligned(self) -> "RegionName":
        return replace(self, aligned=False)

    @property
    def rebuilds_frame(self) -> bool:
        """A turned-back copy grown to the whole frame (straightened, turned:N), not a
        rectangle of the query's own pixels."""
        return self.kind in ("straightened", TURNED_KIND)

    def __str__(self) -> str:
        if self.kind == CROP_KIND:
            text = f"{CROP_KIND}:{self.crop_sides}{self.crop_percent}"
        elif self.kind == TURNED_KIND:
            text = f"{TURNED_KIND}:{self.angle:+g}"
        elif self.step is not None:
            text = f"{self.kind}:{self.step}"
        else:
            text = self.kind
        return text + ALIGNED_SUFFIX if self.aligned else text


@lru_cache(maxsize=4096)  # the search reads the same few dozen names for every query
def _parse(text: str) -> RegionName:
    body = text.removesuffix(ALIGNED_SUFFIX)
    aligned = body != text
    kind, colon, detail = body.partition(":")
    try:
        if not colon:
            name = RegionName(kind, aligned=aligned)
        elif kind == CROP_KIND and (crop := _CROP.fullmatch(detail)):
            name = RegionName(CROP_KIND, crop_sides=crop.group(1),
                              crop_percent=int(crop.group(2)), aligned=aligned)
        elif kind == TURNED_KIND and _ANGLE.fullmatch(detail):
            name = RegionName(TURNED_KIND, angle=float(detail), aligned=aligned)
        elif kind in STEPPED_KINDS and _STEP.fullmatch(detail):
            name = RegionName(kind, step=int(detail), aligned=aligned)
        else:
            raise RegionNameError(f"nothing of kind {kind!r} is named {detail!r}")
    except ValueError as exc:  # RegionNameError, or float() of a malformed angle
        raise RegionNameError(f"{text!r} is not a region name: {exc} "
                              f"(region names: {_EXAMPLES})") from None
    if str(name) != text:  # e.g. turned:2.5 for turned:+2.5: one spelling per name
        raise RegionNameError(f"{text!r} is not a region name: it is spelled {str(name)!r} "
                              f"(region names: {_EXAMPLES})")
    return name


# --------------------------------------------------------------------------------------------
# roles of stored rows, and which of them a query needle meets

# Stored rows fall in three roles, each kept in its own code index so that a needle scans
# only the rows it may pair with; a query reads each role's codes once, with every needle
# that may meet them (hashmatch.search.search_shard; cost: RESULTS.md, "Query cost at 1M").
ROLES = ("full", "region", "crop")


def stored_role(stored_region: str) -> str:
    name = RegionName.try_parse(stored_region)
    if name is None:  # a name no version of hashmatch writes (a hash list's)
        return "region"
    if name.kind == "full" and not name.aligned:
        return "full"
    return "crop" if name.kind == CROP_KIND else "region"


CROP_SEARCHERS = (RegionName("full"), RegionName("content"), RegionName("deskewed"))


def search_roles(query_region: str, query_variant: str) -> tuple[str, ...]:
    """The stored roles a query needle is compared with: rotated/flipped full frames meet
    stored full frames only; the whole picture as it stands (full, content, deskewed; not
    mirrored) meets everything, crop windows included (a cropped copy's frame is near a
    stored window); pictures cut out of a screenshot or post meet full frames and regions;
    mirrored cut-outs and turned-back frames (straightened, turned:N: what they rebuild is
    the whole frame) meet full frames only -- on the benchmark no query was found through
    their pairs with stored regions alone (RESULTS.md, "Query cost at 1M, session 5"). Crop
    windows are most of the stored rows, regions the next largest share: every needle kept
    off them is a pass saved. Aligned boxes (``+aligned``) meet full frames and regions,
    turned:N ones full frames only."""
    name = RegionName.parse(query_region)
    if query_variant != "original":
        return ("full",)
    if name in CROP_SEARCHERS:
        return ROLES
    # "straightened+aligned" meets regions too: the string test this replaces matched
    # "straightened" exactly and "turned:" as a prefix; kept so that no answer changes.
    if name.rebuilds_frame and not (name.kind == "straightened" and name.aligned):
        return ("full",)
    return ("full", "region")
