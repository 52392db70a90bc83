"""Which steps of the region pipeline run: one value handed down instead of module switches.

An :class:`hashmatch.Index` holds a :class:`RegionConfig` (``Index.open(...,
region_config=...)``) and hands it to every step that reads it -- the hashing of stored
images, the query's needles and the search -- and, inside the jobs it sends, to its worker
processes: a module constant flipped in the parent (``setattr``) is not seen there.
Benchmarks and tests switch a step off by passing another config
(``RegionConfig(align=False)``; ``bench_robustness.py --set regions.align=false``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegionConfig:
    """Every switch on (the defaults) is what hashmatch ships and what RESULTS.md measures."""

    # Box sides found on the analysis copy are off by up to one analysis pixel (a few image
    # pixels); a sliver of a black border left in a region moves PDQ by ~30 bits. Each side is
    # moved to the strongest line-to-line step of the decoded image within that distance.
    refine: bool = True
    # Query side: also rectangles framed by straight edges (boxes._framed_rectangles).
    framed: bool = True
    # Query side: a picture turned a few degrees on filled corners is turned back
    # ("deskewed": tilt._deskewed).
    deskew: bool = True
    # Query side: a picture turned and cut to its fill-free inner box is turned back and
    # grown to its frame ("straightened", "turned:N": tilt._straightened).
    straighten: bool = True
    # Stored side: the crop windows of the content region (fingerprints.CROP_WINDOWS).
    store_crop_windows: bool = True
    # Query side: the closest items' pairs are aligned and the moved boxes searched again
    # (align.Aligner, hashmatch.search.search_shard).
    align: bool = True


DEFAULT_REGION_CONFIG = RegionConfig()
