"""Which regions of an image are fingerprinted: what the Index stores for a known image and
what a query searches with.

Stored side (:func:`storage_regions`, :func:`storage_fingerprints`): full, content, embedded
and the crop windows of the content region. Query side (:func:`query_regions`,
:func:`query_needles`): full (in PDQ's 8 rotations/flips), content, embedded and their
earlier steps, framed rectangles, turned-back copies, each as is and mirrored, and the
:class:`~hashmatch.regions.align.Aligner` of them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

from .align import Aligner
from .boxes import Box, Region, _distinct, _hash_box, _pixels, find_boxes
from .config import DEFAULT_REGION_CONFIG, RegionConfig
from .names import RegionName
from .tilt import _deskewed, _straightened

if TYPE_CHECKING:
    from ..fingerprint import Fingerprint

# Stored crop windows: (sides cut, share of the content region's size cut from each). A copy
# cropped c on one side lies |c - w| from the nearest one-side window w instead of c from the
# full frame; half of real crops take a little off two sides, which the two-side windows
# cover; query-time alignment (Aligner) then moves the query's frame onto the window.
# Measured (RESULTS.md, "Robustness, session 3" and "Alignment, session 4"): the two-side
# and 6 % windows raised crop recall on the quick suite from 0.86 to 0.95; with alignment,
# the 18 % windows raised crops of 18-21 % from 0.66 to 0.85 on the full suite; the corner
# windows at 12 and 18 % (a corner cut out of a picture, as a screenshot of part of it does)
# raised crops of 15 % off two adjacent sides from 10 to 40 of 80 copies found at 4,000
# items with the same verifier (session 8; the full bench_precision run: 0.21 -> 0.73).
# Every window is a row the query's frame is scanned against: 27.4 codes per item on 100
# corpus photos and receipts (19.4 before the corner windows).
CROP_WINDOWS = (("l", 0.18), ("t", 0.18), ("r", 0.18), ("b", 0.18),
                ("l", 0.12), ("t", 0.12), ("r", 0.12), ("b", 0.12),
                ("l", 0.06), ("t", 0.06), ("r", 0.06), ("b", 0.06),
                ("lr", 0.06), ("tb", 0.06), ("lt", 0.06), ("tr", 0.06), ("rb", 0.06), ("bl", 0.06),
                ("lt", 0.12), ("tr", 0.12), ("rb", 0.12), ("bl", 0.12),
                ("lt", 0.18), ("tr", 0.18), ("rb", 0.18), ("bl", 0.18))


# --------------------------------------------------------------------------------------------
# crop windows, the two lists of regions

def crop_windows(box: Box, windows=None) -> dict[str, Box]:
    """``box`` minus a share of its size on the sides each window names: ("l", 0.12) cuts 12 %
    off the left ("crop:l12"), ("lt", 0.06) 6 % off the left and the top ("crop:lt6")."""
    l, t, r, b = box
    out = {}
    for sides_cut, share in (CROP_WINDOWS if windows is None else windows):
        dw, dh = round((r - l) * share), round((b - t) * share)
        out[str(RegionName.crop_window(sides_cut, round(share * 100)))] = (
            l + dw * ("l" in sides_cut), t + dh * ("t" in sides_cut),
            r - dw * ("r" in sides_cut), b - dh * ("b" in sides_cut))
    return out


def crop_window_box(box, name: str):
    """The box of crop window ``name`` ("crop:lt6") of ``box`` (float coordinates allowed):
    the inverse of the names :func:`crop_windows` gives, or None for a name it never gives."""
    window = RegionName.try_parse(name)
    if window is None or window.crop_percent is None or window.aligned:
        return None
    sides_cut, share = window.crop_sides, window.crop_percent / 100
    l, t, r, b = box
    dw, dh = (r - l) * share, (b - t) * share
    return (l + dw * ("l" in sides_cut), t + dh * ("t" in sides_cut),
            r - dw * ("r" in sides_cut), b - dh * ("b" in sides_cut))


def storage_regions(image: Image.Image, crops: bool = False, boxes=None,
                    config: RegionConfig = DEFAULT_REGION_CONFIG) -> list[Region]:
    """Regions to fingerprint and store for a known image: full, content, embedded (each only
    if distinct); with ``crops`` (what the Index stores), also the crop windows of the content
    region (``CROP_WINDOWS``). ``boxes``: ``find_boxes(image, framed=False)`` if the caller
    has it."""
    if boxes is None:
        # framed rectangles are a query-side search
        boxes = find_boxes(image, framed=False, config=config)
    named = [("full", boxes["full"]), ("content", boxes["content"]),
             ("embedded", boxes["embedded"])]
    if crops:
        named += list(crop_windows(boxes["content"]).items())
    return _distinct(image, named)


def query_regions(image: Image.Image, embedded_steps: bool = True,
                  config: RegionConfig = DEFAULT_REGION_CONFIG) -> list[Region]:
    """Regions to fingerprint for a query: full, content, embedded and (``embedded_steps``)
    the earlier steps of the embedded search, edge-framed rectangles, each only if distinct;
    and, for a picture turned a few degrees on filled corners, ``deskewed`` (its ``source``
    is the turned-back image, not ``image``); otherwise, for a picture turned and cut to its
    fill-free inner box, ``straightened`` or ``turned:<angle>`` (:func:`_straightened`).
    ``config``: which of these searches run."""
    boxes = find_boxes(image, config=config)
    kinds = {name: RegionName.parse(name) for name in boxes}
    names = ["full", "content", "embedded"]
    if embedded_steps:
        names += sorted(name for name, region in kinds.items()
                        if region.step is not None and region.kind in ("content", "embedded"))
    names += sorted(name for name, region in kinds.items() if region.kind == "framed")
    found = _distinct(image, [(name, boxes[name]) for name in names])
    deskewed = _deskewed(image) if config.deskew else []
    found += deskewed
    if config.straighten and not deskewed:  # filled corners gave the angle already
        found += _straightened(image)
    return found


# --------------------------------------------------------------------------------------------
# fingerprints of regions (what the Index stores and searches)

def storage_fingerprints(image: Image.Image, full=None, boxes=None,
                         config: RegionConfig = DEFAULT_REGION_CONFIG
                         ) -> list[tuple[str, "Fingerprint"]]:
    """``(region name, PDQ fingerprint)`` to store for a known image, the full frame first.

    ``full``: the full frame's fingerprint if the caller has it already (hash_file's, so the
    stored full row equals what ``hashmatch hash`` prints). Other regions are hashed in fast
    mode from the same decoded pixels. ``config``: whether crop windows are stored, and how
    boxes are found when the caller has none.
    """
    from ..hashers.pdq import pdq_hash_boxes, pdq_hash_image

    stored = storage_regions(image, crops=config.store_crop_windows, boxes=boxes, config=config)
    # The other regions in one call, as _hash_box would hash each: boxes with the same rows
    # (crop windows cut from the left or right) share one row stage of the fast path.
    others = iter(pdq_hash_boxes(_pixels(image), [r.box for r in stored if r.name != "full"]))
    out = []
    for region in stored:
        if region.name == "full":
            fp = full if full is not None else pdq_hash_image(image, exact=False)
        else:
            fp = next(others)
        out.append((region.name, fp))
    return out


def query_fingerprints(image: Image.Image, full_variants=None, regions: bool = True,
                       config: RegionConfig = DEFAULT_REGION_CONFIG
                       ) -> list[tuple["Fingerprint", str, str]]:
    """``(fingerprint, region, variant)`` needles for a query image (:func:`query_needles`
    without the aligner)."""
    return query_needles(image, full_variants, regions, config)[0]


def query_needles(image: Image.Image, full_variants=None, regions: bool = True,
                  config: RegionConfig = DEFAULT_REGION_CONFIG
                  ) -> tuple[list[tuple["Fingerprint", str, str]], Aligner | None]:
    """``(fingerprint, region, variant)`` needles for a query image, and the
    :class:`Aligner` of its regions (None without regions). ``config``: which regions are
    searched for (:func:`query_regions`).

    The full frame comes in PDQ's 8 rotations/flips (``full_variants``: the caller's, if it
    has them), searched against stored full frames only; every other region (content,
    embedded and its earlier steps) as is and mirrored, searched against every stored row.
    A mirrored meme or post is common; the other rotations of a region are not worth the
    query cost (RESULTS.md, "Robustness").
    """
    from ..hashers.pdq import MIRROR, VARIANT_NAMES, pdq_hash_image

    if full_variants is None:
        full_variants = pdq_hash_image(image, exact=False, dihedral=True)
    needles = [(fp, "full", name) for fp, name in zip(full_variants, VARIANT_NAMES)]
    if not regions:
        return needles, None
    pixels = _pixels(image)
    found = query_regions(image, config=config)
    for region in found:
        if region.name == "full":
            continue
        # a mirrored and turned re-post: rare, not worth it
        if RegionName.parse(region.name).rebuilds_frame:
            needles.append((_hash_box(_pixels(region.source), region.box), region.name,
                            VARIANT_NAMES[0]))
            continue
        variants = (_hash_box(pixels, region.box, dihedral=True) if region.source is image
                    else _hash_box(_pixels(region.source), region.box, dihedral=True))
        needles.append((variants[0], region.name, VARIANT_NAMES[0]))
        needles.append((variants[MIRROR], region.name, VARIANT_NAMES[MIRROR]))
    # The aligner also carries the pixels verification compares (hashmatch.verify); whether
    # alignment runs is the search's choice (RegionConfig.align).
    return needles, Aligner.of(image, found)

