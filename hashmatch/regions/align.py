"""Query-time alignment: a query region's box moved side by side onto a stored picture.

The search (:func:`hashmatch.search.search_shard`) aligns the pairs of the few closest
items (``RegionConfig.align``); :class:`Aligner` carries what that needs of the query, and
the pixels verification compares (:mod:`hashmatch.verify`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..fingerprint import Fingerprint
from .boxes import Box, Region, _hash_box

# --------------------------------------------------------------------------------------------
# query-time alignment of a contender pair

# A region found by trimming is only roughly the picture (a side 3 % off moves PDQ 30-60
# bits), and a cropped copy lies between two stored crop windows. For the few stored items
# that come closest, the query region's box is moved side by side towards each item's
# closest stored rows (coordinate descent on the PDQ distance, steps of 8, 4, 2, 1 % of the
# box): a true copy locks in (crops: 70-80 bits -> 4-16), a same-template sibling or an
# unrelated picture gains a few bits only (RESULTS.md, "Alignment"). A box aligned onto a
# template sibling is the picture's true box: it is searched again as a new needle
# (``<region>+aligned``), which finds the copy's own source when it was not among the
# closest. The descent runs on a grey copy on which every region is at least ALIGN_SIDE
# long (at most ALIGN_MAX_PIXELS in all).
ALIGN_SIDE = 256
ALIGN_MAX_PIXELS = 1_000_000
ALIGN_STEPS = (0.08, 0.04, 0.02, 0.01)
# Items aligned per query: the best ALIGN_CONTENDERS within ALIGN_WINDOW bits of the best
# score, and only when no pair is certain already (<= PDQ_CERTAIN).
ALIGN_CONTENDERS = 6
ALIGN_WINDOW = 24
# Rows aligned per item, its closest first.
ALIGN_ROWS = 3
# Aligned boxes searched again (those of the closest items whose box moved), at most.
ALIGN_RESEARCH = 2


@dataclass
class Aligner:
    """What alignment needs of one query image: grey copies (of the image, and of its
    turned-back copies: deskewed, straightened, turned:N) and where the query's regions are
    on them. Sent between processes with the needles (at most a few MB)."""

    greys: list  # (h, w) uint8 arrays
    boxes: dict  # region name -> (index into greys, Box on that grey copy)

    @classmethod
    def of(cls, image: Image.Image, regions: list[Region]) -> "Aligner":
        by_source: dict[int, list[Region]] = {}
        sources = {}
        for region in regions:
            by_source.setdefault(id(region.source), []).append(region)
            sources[id(region.source)] = region.source
        greys, boxes = [], {}
        for key, members in by_source.items():
            source = sources[key]
            grey = source if source.mode == "L" else source.convert("L")
            smallest = min(max(r.box[2] - r.box[0], r.box[3] - r.box[1]) for r in members)
            factor = max(1, smallest // ALIGN_SIDE,
                         int(np.ceil(np.sqrt(grey.width * grey.height / ALIGN_MAX_PIXELS))))
            small = grey.reduce(factor) if factor > 1 else grey
            sx, sy = grey.width / small.width, grey.height / small.height
            for region in members:
                l, t, r, b = region.box
                boxes[region.name] = (len(greys), (int(round(l / sx)), int(round(t / sy)),
                                                   int(round(r / sx)), int(round(b / sy))))
            greys.append(np.ascontiguousarray(np.asarray(small, np.uint8)))
        return cls(greys, boxes)

    def can_align(self, region: str, variant: str) -> bool:
        return region in self.boxes and variant in ("original", "flipy")

    def align(self, region: str, variant: str, target: np.ndarray) -> tuple[int, Box]:
        """The smallest PDQ distance to ``target`` (packed bits) of the region's box moved
        side by side, and that box (on the grey copy)."""
        source, box = self.boxes[region]
        h, w = self.greys[source].shape
        target = Fingerprint("pdq", target)
        best = self.fingerprint(region, box, variant) - target
        for step in ALIGN_STEPS:
            improved = True
            while improved:
                improved = False
                l, t, r, b = box
                dw, dh = max(1, round((r - l) * step)), max(1, round((b - t) * step))
                for side, delta in ((0, dw), (0, -dw), (2, -dw), (2, dw),
                                    (1, dh), (1, -dh), (3, -dh), (3, dh)):
                    moved = list(box)
                    moved[side] = min(max(0, moved[side] + delta), w if side % 2 == 0 else h)
                    if moved[2] - moved[0] < 16 or moved[3] - moved[1] < 16 or tuple(moved) == box:
                        continue
                    d = self.fingerprint(region, tuple(moved), variant) - target
                    if d < best:
                        best, box, improved = d, tuple(moved), True
                        break
        return best, box

    def fingerprint(self, region: str, box: Box, variant: str = "original") -> "Fingerprint":
        """PDQ of ``box`` of the grey copy ``region`` is on, as is or mirrored (``variant``
        "flipy"). Remembered: the descents towards a query's several closest stored rows
        start from the same box and try the same first moves."""
        from ..hashers.pdq import MIRROR

        source = self.boxes[region][0]
        hashed = self.__dict__.setdefault("_hashed", {})
        key = (source, box, variant)
        if key not in hashed:
            grey = self.greys[source]
            hashed[key] = _hash_box(grey, box, dihedral=True)[MIRROR] \
                if variant == "flipy" else _hash_box(grey, box)
        return hashed[key]

    def __getstate__(self):  # the remembered hashes stay in the process that made them
        return {name: value for name, value in self.__dict__.items() if name != "_hashed"}
