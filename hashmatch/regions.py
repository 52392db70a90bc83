"""Regions of an image worth fingerprinting, so re-posts in a new frame still match.

A re-posted advert is rarely the same rectangle of pixels: it comes back with borders,
letterbox bars or meme caption bars, inside a screenshot of a social-media post or of a phone
screen, or cropped a little. A whole-image hash (PDQ) sees the frame, not the picture. This
module finds, cheaply and on a small copy of the image, the rectangles to hash:

- ``full``: the whole frame (always).
- ``content``: uniform borders of any colour trimmed, side by side and repeatedly (padding,
  letterbox, a coloured mat inside a white frame), with a tolerance for JPEG noise.
  ``content:1``, ``content:2`` (query side only) are earlier steps: a card whose own header
  band is flat colour is trimmed into, and its frame is an earlier step.
- ``embedded``: bands that are flat colour with sparse text or UI chrome trimmed too (meme
  caption bars, a post's header/caption/like bar, a phone's status and navigation bars): what is
  left is the largest picture-like rectangle. ``embedded:1``, ``embedded:2`` (query side only)
  are earlier steps of that search, for flat-coloured pictures (posters, chat screenshots) whose
  own bands the search would otherwise eat into.
- ``crop:<sides><percent>`` (stored side, ``storage_regions(crops=True)``): windows of the
  content region with a few percent cut off one or two sides (``CROP_WINDOWS``), so that a copy
  cropped by 5-20 % still lands near one of them (and alignment moves it onto one).

Stored side and query side differ on purpose: :func:`storage_regions` returns what goes into
the index for a known image (full, content, embedded, crop windows: about 28 PDQ codes, 900
bytes; 27.4 on average on 100 corpus photos and receipts); :func:`query_regions` what a query
hashes (the index adds PDQ's 8 rotations/flips of the query's full frame, compared with
stored full frames only). Boxes are
deduplicated: a region almost equal to one already listed is dropped.

Candidates: per stored item the best pair score (distance, plus ``REGION_PENALTY`` for pairs
involving an embedded region); items within ``PDQ_MAX_DISTANCE`` are candidates, and the
query's verification stage (hashmatch.verify, Index._verify) decides which are the same
picture. :func:`select_matches` is the older relative rule (the best item ``PDQ_MARGIN``
bits closer than any other), applied only when a caller asks for ``margin`` > 0.

Everything is measured in benchmarks/bench_robustness.py (RESULTS.md, "Robustness").
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from . import _imagecore
from .fingerprint import Fingerprint
from .formats import ALIGNED_SUFFIX  # noqa: F401  (one spelling for the search and the words)
from .policy import MATCH_POLICY

Box = tuple[int, int, int, int]  # (left, top, right, bottom), PIL convention, right/bottom open

# Analysis runs on a copy whose long side is at most this: borders and bands of a few percent
# are still several pixels wide, and the analysis costs a few milliseconds per image
# (192 rather than 128: box edges within ~0.5 % of the side; frames found with IoU >= 0.95
# went from 62 % to 70 % on the quick suite's screenshots, posts and memes).
ANALYSIS_SIDE = 192
# ... but never fewer than this along the short side (when the image has them): a phone
# screenshot 9:19.5 drafted to 270x585 was analysed at 68x147, too coarse for the edges of a
# post inside it (full suite: frame recall +0.012).
ANALYSIS_SHORT_SIDE = 128

# A pixel "is the border colour" when every channel is within this many levels of it. The
# box-filtered analysis copy averages JPEG noise away; 28 merged near-white UI (a chat's
# grey input bar, an ID card's MRZ band) into white page backgrounds.
COLOUR_TOLERANCE = 14
# The same for the loose trimming of flat bands with text: a chat screenshot's light-grey
# input area (245) or an ID card's grey band inside a white post card (255) must not be
# trimmed as part of the card (full suite: frame recall +0.013 from 14 to 8).
BAND_TOLERANCE = 8
# Share of a row/column that must be border colour: strict for ``content`` (noise only),
# loose for ``embedded`` (flat bands carrying text, icons, avatars).
UNIFORM_SHARE = 0.97
BAND_SHARE = 0.45
# Tallest text line (as a share of the frame side) a flat band may carry and still be trimmed.
TEXT_LINE_SHARE = 0.08
# A region smaller than this share of either side of the frame is not a picture (a text
# line, an avatar); the trimming that produced it is rejected.
MIN_SIDE_SHARE = 0.2
# Query side: also rectangles framed by straight edges (_framed_rectangles).
FRAMED = True
# Boxes within this IoU of an earlier one would fingerprint (almost) the same pixels. Not
# looser: a box 3 % off on each side (IoU 0.9) moves PDQ by 30-60 bits, and an edge-framed
# rectangle dropped as a near-duplicate of a looser box was the one that fitted (full suite:
# 0.9 -> 0.95 raised recall at 1 % false alarm from 0.844 to 0.862).
DEDUP_IOU = 0.95

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
STORE_CROP_WINDOWS = True


@dataclass(frozen=True)
class Region:
    """A named rectangle of a source image; ``image()`` gives its pixels."""

    name: str  # "full", "content", "embedded", "crop:l12", ...
    box: Box
    source: Image.Image = field(repr=False, compare=False)

    def image(self) -> Image.Image:
        if self.box == (0, 0, self.source.width, self.source.height):
            return self.source
        return self.source.crop(self.box)

    @property
    def area_share(self) -> float:
        l, t, r, b = self.box
        return (r - l) * (b - t) / max(1, self.source.width * self.source.height)


# --------------------------------------------------------------------------------------------
# analysis copy

def _analysis_array(image: Image.Image) -> tuple[np.ndarray, float, float]:
    """(h, w, c) int16 pixels (c = 3 for colour images, 1 for grey ones) at most ANALYSIS_SIDE
    long, and the x/y scale back to the image."""
    w, h = image.size
    factor = max(1, int(np.ceil(max(w, h) / ANALYSIS_SIDE)))
    if ANALYSIS_SHORT_SIDE:
        factor = max(1, min(factor, int(min(w, h) // ANALYSIS_SHORT_SIDE)))
    small = image if image.mode in ("RGB", "L") else image.convert("RGB")
    if factor > 1:
        small = small.reduce(factor)  # box filter: cheap, and averages JPEG noise away
    arr = np.asarray(small, dtype=np.int16)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, w / arr.shape[1], h / arr.shape[0]


def _to_image_box(box: Box, sx: float, sy: float, size: tuple[int, int]) -> Box:
    l, t, r, b = box
    return (max(0, int(round(l * sx))), max(0, int(round(t * sy))),
            min(size[0], int(round(r * sx))), min(size[1], int(round(b * sy))))


# --------------------------------------------------------------------------------------------
# trimming flat bands from each side

def _tolerance(share_needed: float) -> int:
    return COLOUR_TOLERANCE if share_needed >= UNIFORM_SHARE else BAND_TOLERANCE


def _border_colour(line: np.ndarray, share_needed: float) -> np.ndarray | None:
    """The colour of an outermost row/column (its median), if enough of it has that colour."""
    if len(line) == 0:
        return None
    ordered = np.sort(line, axis=0)  # np.median's value, without its per-call overhead
    colour = (ordered[(len(line) - 1) // 2] + ordered[len(line) // 2].astype(np.float64)) / 2
    share = np.count_nonzero((np.abs(line - colour) <= _tolerance(share_needed)).all(axis=1))
    return colour if share >= share_needed * len(line) else None


def _band_depth(lines: np.ndarray, limit: int, share_needed: float) -> int:
    """How many lines (outermost first) to trim from one side.

    ``lines``: (n, length, channels), index 0 = the outermost line. The band is the run of
    lines where at least ``share_needed`` of the pixels have the border colour (the
    outermost line's median). With a loose share (text inside the band), a line of dense text
    (bold meme captions) between clean lines is bridged (a line is in the band if one at most
    TEXT_LINE_SHARE of the side further in is), and the cut is placed after the band's last
    clean (uniform) line, so a caption's text rows are trimmed but the picture's first rows
    are not. The scan is ``_imagecore.band_depth`` (twin: ``_imagecore_ref.band_depth``).
    """
    colour = _border_colour(lines[0], share_needed)
    if colour is None:
        return 0
    loose = share_needed < UNIFORM_SHARE
    reach = max(2, int(len(lines) * TEXT_LINE_SHARE)) if loose else 0
    return _imagecore.band_depth(lines, np.ascontiguousarray(colour, np.float64),
                                 _tolerance(share_needed), limit, share_needed, loose, reach,
                                 UNIFORM_SHARE)


def _trim_steps(arr: np.ndarray, share_needed: float, rounds: int = 4) -> list[Box]:
    """Trim flat bands from all four sides, repeatedly (frames inside frames).

    Returns the box after each half-round (top+bottom, then left+right), last = most trimmed.
    The intermediate boxes matter for flat-coloured pictures (posters, chat screenshots) inside
    a frame: loose trimming goes on into the picture's own bands, and the picture's true box
    is one of the earlier steps.
    """
    h, w, _ = arr.shape
    l, t, r, b = 0, 0, w, h
    steps: list[Box] = []
    for _ in range(rounds):
        before = (l, t, r, b)
        view = arr[t:b, l:r]
        vh, vw = view.shape[:2]
        if vh < 4 or vw < 4:
            break
        # At most 45% from one side: the picture is somewhere in the middle.
        t += _band_depth(view, int(vh * 0.45), share_needed)
        b -= _band_depth(view[::-1], int(vh * 0.45), share_needed)
        steps.append((l, t, r, b))
        view = arr[t:b, l:r]
        l += _band_depth(view.transpose(1, 0, 2), int(vw * 0.45), share_needed)
        r -= _band_depth(view.transpose(1, 0, 2)[::-1], int(vw * 0.45), share_needed)
        steps.append((l, t, r, b))
        if (l, t, r, b) == before:
            break
    return steps or [(l, t, r, b)]


def _trim(arr: np.ndarray, share_needed: float, rounds: int = 4) -> Box:
    return _trim_steps(arr, share_needed, rounds)[-1]


def _plausible(box: Box, w: int, h: int) -> bool:
    l, t, r, b = box
    return (r - l) >= MIN_SIDE_SHARE * w and (b - t) >= MIN_SIDE_SHARE * h and r - l >= 8 and b - t >= 8


def find_boxes(image: Image.Image, framed: bool = True) -> dict[str, Box]:
    """``{"full", "content", "embedded"}`` boxes in image pixel coordinates, plus
    ``"embedded:1"``, ``"embedded:2"``: earlier (less trimmed) steps of the embedded search,
    and (``framed``) ``"framed:N"``: rectangles framed by straight edges."""
    arr, sx, sy = _analysis_array(image)
    h, w, _ = arr.shape
    full = (0, 0, image.width, image.height)
    boxes = {"full": full, "content": full, "embedded": full}
    content_steps = [box for box in _trim_steps(arr, UNIFORM_SHARE) if _plausible(box, w, h)]
    if content_steps:
        boxes["content"] = boxes["embedded"] = _to_image_box(content_steps[-1], sx, sy, image.size)
        _add_steps(boxes, "content", content_steps, (w, h), sx, sy, image.size)
    # From the full frame, not from ``content``: strict trimming can stop inside UI chrome
    # (an avatar, a clock) where the loose trimming would have gone through.
    steps = [box for box in _trim_steps(arr, BAND_SHARE) if _plausible(box, w, h)]
    if steps:
        boxes["embedded"] = _to_image_box(steps[-1], sx, sy, image.size)
        _add_steps(boxes, "embedded", steps, (w, h), sx, sy, image.size)
    if framed and FRAMED:
        for i, box in enumerate(_framed_rectangles(arr)):
            boxes[f"framed:{i + 1}"] = _to_image_box(box, sx, sy, image.size)
    if REFINE and (sx > 1 or sy > 1):
        grey = _grey_pixels(image)
        refined: dict[Box, Box] = {}  # several names often share one box
        for name, box in boxes.items():
            if name != "full":
                if box not in refined:
                    refined[box] = _refine_box(grey, box, sx, sy)
                boxes[name] = refined[box]
    return boxes


def _add_steps(boxes: dict, name: str, steps: list[Box], analysis_size, sx, sy, size) -> None:
    """``name:1``, ``name:2``, ...: every distinct earlier step of a trimming (query side
    only), e.g. a card's frame before its own flat header band was trimmed too, or a card
    in a post with the post's bands trimmed and the card's own header not yet (the third
    step). At most 7 (4 rounds of 2 half-rounds, the last one is the final box)."""
    w, h = analysis_size
    earlier = dict.fromkeys(box for box in steps[:-1]
                            if box != steps[-1] and box != (0, 0, w, h))
    for i, box in enumerate(earlier):
        boxes[f"{name}:{i + 1}"] = _to_image_box(box, sx, sy, size)


# Box sides found on the analysis copy are off by up to one analysis pixel (a few image
# pixels); a sliver of a black border left in a region moves PDQ by ~30 bits. Each side is
# moved to the strongest line-to-line step of the decoded image within that distance.
REFINE = True


def _grey_pixels(image: Image.Image) -> np.ndarray:
    """uint8 grey pixels (a view of an "L" image, no copy): only thin strips are read."""
    grey = image if image.mode == "L" else image.convert("L")
    return np.asarray(grey)


def _refine_box(grey: np.ndarray, box: Box, sx: float, sy: float) -> Box:
    height, width = grey.shape
    l, t, r, b = box
    reach_x, reach_y = int(np.ceil(sx)), int(np.ceil(sy))

    def best_step(lines: np.ndarray, first: int, current: int) -> int:
        # lines[k] is image line first + k; a side at position p lies between p-1 and p.
        if len(lines) < 2:
            return current
        steps = np.abs(np.diff(lines.astype(np.float32), axis=0)).mean(axis=1)
        k = int(np.argmax(steps))
        return first + k + 1 if steps[k] >= EDGE_STEP / 2 else current

    def side(position: int, limit: int, reach: int, take) -> int:
        if position <= 0 or position >= limit:
            return position  # on the frame's border: nothing beyond it to step from
        lo, hi = max(0, position - reach - 1), min(limit, position + reach)
        return best_step(take(lo, hi), lo, position)

    t2 = side(t, height, reach_y, lambda lo, hi: grey[lo:hi, l:r])
    b2 = side(b, height, reach_y, lambda lo, hi: grey[lo:hi, l:r])
    l2 = side(l, width, reach_x, lambda lo, hi: grey[t:b, lo:hi].T)
    r2 = side(r, width, reach_x, lambda lo, hi: grey[t:b, lo:hi].T)
    refined = (l2, t2, r2, b2)
    return refined if r2 - l2 >= 8 and b2 - t2 >= 8 else box


# --------------------------------------------------------------------------------------------
# rectangles framed by straight edges (a picture pasted into a post, meme or screenshot)

# Grey-level step between neighbouring analysis pixels that counts as an edge: JPEG noise on
# the box-filtered analysis copy stays well below it; a pasted picture's border against
# page, bar or screen background is above it on most of its length.
EDGE_STEP = 8
# A line must be at least this share of the frame side long; gaps up to EDGE_GAP px are bridged.
LINE_SHARE = 0.3
EDGE_GAP = 2
# Share of each side of a rectangle that must lie on an edge (the frame border counts).
SIDE_SUPPORT = 0.8
# Query side: at most this many edge-framed rectangles, largest first.
MAX_FRAMED = 3
MAX_LINES = 48


def _runs(mask: np.ndarray, min_length: int) -> list[tuple[int, int, int]]:
    """(line index, start, end) of runs of True along axis 1 of ``mask`` (2-D), gaps of up to
    EDGE_GAP bridged, at least ``min_length`` long; longest first."""
    if EDGE_GAP:  # a gap is bridged when there is edge within EDGE_GAP on both sides
        counts = np.zeros((mask.shape[0], mask.shape[1] + 1), np.int32)
        np.cumsum(mask, axis=1, out=counts[:, 1:])
        x = np.arange(mask.shape[1])
        left = counts[:, x + 1] - counts[:, np.maximum(0, x - EDGE_GAP)]
        right = counts[:, np.minimum(mask.shape[1], x + EDGE_GAP + 1)] - counts[:, x]
        mask = mask | ((left > 0) & (right > 0))
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    change = np.diff(padded, axis=1)
    starts = np.argwhere(change == 1)  # row-major: starts and ends pair up in order
    ends = np.argwhere(change == -1)
    lengths = ends[:, 1] - starts[:, 1]
    long_enough = np.nonzero(lengths >= min_length)[0]
    long_enough = long_enough[np.argsort(-lengths[long_enough], kind="stable")][:MAX_LINES]
    runs = [(int(starts[k, 0]), int(starts[k, 1]), int(ends[k, 1])) for k in long_enough]
    return runs


def _framed_rectangles(arr: np.ndarray) -> list[Box]:
    """Rectangles of the analysis copy whose four sides run along strong straight edges (or
    the frame's border), largest first: where a pasted picture, a post card or a phone's
    picture viewer is, whatever the colours inside and around it."""
    grey = arr.mean(axis=2, dtype=np.float32)
    h, w = grey.shape
    # horizontal[y, x]: an edge between rows y-1 and y at column x (rows 0 and h: the border)
    horizontal = np.ones((h + 1, w), bool)
    horizontal[1:h] = np.abs(np.diff(grey, axis=0)) >= EDGE_STEP
    vertical = np.ones((w + 1, h), bool)  # transposed: vertical[x, y]
    vertical[1:w] = (np.abs(np.diff(grey, axis=1)) >= EDGE_STEP).T
    # One pixel of slack: a boundary between analysis pixels may fall inside one of them.
    vertical_near = vertical.copy()
    vertical_near[1:] |= vertical[:-1]
    vertical_near[:-1] |= vertical[1:]
    lines = np.array(_runs(horizontal, max(4, int(LINE_SHARE * w))), np.int64).reshape(-1, 3)
    # Every (top line, bottom line) pair at once; side support from column prefix sums.
    support = np.zeros((w + 1, h + 1), np.int32)
    np.cumsum(vertical_near, axis=1, out=support[:, 1:])
    top, bottom = lines[:, None, 0], lines[None, :, 0]
    left = np.maximum(lines[:, None, 1], lines[None, :, 1])
    right = np.minimum(lines[:, None, 2], lines[None, :, 2])
    height = bottom - top
    ok = (height >= MIN_SIDE_SHARE * h) & (right - left >= MIN_SIDE_SHARE * w)
    ok &= ~((top == 0) & (bottom == h) & (left == 0) & (right == w))  # the frame itself
    ti, bi = np.nonzero(ok)
    if len(ti) == 0:
        return []
    t, b_, l, r = top[ti, 0], bottom[0, bi], left[ti, bi], right[ti, bi]
    sides = np.minimum((support[l, b_] - support[l, t]), (support[r, b_] - support[r, t])) / (b_ - t)
    keep = sides >= SIDE_SUPPORT
    # A picture's top and bottom edges end at its sides; lines running far past them belong
    # to something larger (a band, the page).
    span = np.maximum(lines[ti, 2] - lines[ti, 1], lines[bi, 2] - lines[bi, 1])
    fit = (r - l) / span * sides
    found = [(float(f), int((rr - ll) * (bb - tt)), (int(ll), int(tt), int(rr), int(bb)))
             for f, ll, tt, rr, bb, k in zip(fit, l, t, r, b_, keep) if k]
    found.sort(key=lambda entry: (-entry[0], -entry[1]))
    kept: list[Box] = []
    for _, _, box in found:
        if all(iou(box, other) < DEDUP_IOU for other in kept):
            kept.append(box)
        if len(kept) >= MAX_FRAMED:
            break
    return kept


# --------------------------------------------------------------------------------------------
# small rotations with filled corners (query side)

# A picture turned by a few degrees and re-posted with its corners filled (white, black) is a
# tilted rectangle on a flat background: its angle is the one that makes the outline's
# bounding box smallest; turned back and trimmed, it is (almost) the original frame.
DESKEW_MAX_DEGREES = 8.0
DESKEW_STEP_DEGREES = 0.25
DESKEW_MIN_DEGREES = 0.75
DESKEW = True


def _tilt(arr: np.ndarray):
    """(angle in degrees for PIL's ``rotate`` to undo, fill grey level, outline x, outline y
    in analysis pixels), or None when the analysis copy is not a tilted picture on filled
    corners."""
    grey = arr.mean(axis=2, dtype=np.float32)
    h, w = grey.shape
    if min(h, w) < 16:
        return None
    corners = grey[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]]
    if np.ptp(corners) > COLOUR_TOLERANCE:
        return None
    fill = float(np.median(corners))
    content = np.abs(grey - fill) > COLOUR_TOLERANCE
    rows = np.nonzero(content.any(axis=1))[0]
    cols = np.nonzero(content.any(axis=0))[0]
    if len(rows) < h // 2 or len(cols) < w // 2:
        return None
    left = content[rows].argmax(axis=1)
    right = w - 1 - content[rows, ::-1].argmax(axis=1)
    top = content[:, cols].argmax(axis=0)
    bottom = h - 1 - content[::-1, cols].argmax(axis=0)
    xs = np.concatenate([left, right, cols, cols]).astype(np.float64)
    ys = np.concatenate([rows, rows, top, bottom]).astype(np.float64)
    degrees = np.arange(-DESKEW_MAX_DEGREES, DESKEW_MAX_DEGREES + 1e-9, DESKEW_STEP_DEGREES)
    theta = np.radians(degrees)[:, None]
    u = xs * np.cos(theta) - ys * np.sin(theta)
    v = xs * np.sin(theta) + ys * np.cos(theta)
    area = np.ptp(u, axis=1) * np.ptp(v, axis=1)
    best = int(np.argmin(area))
    upright = area[np.argmin(np.abs(degrees))]
    if abs(degrees[best]) < DESKEW_MIN_DEGREES or area[best] > 0.97 * upright:
        return None
    # Points turned by +theta (y down) line up; PIL's rotate(angle) turns the picture
    # counter-clockwise on screen, which is -theta in these coordinates.
    return -float(degrees[best]), int(round(fill)), xs + 0.5, ys + 0.5


# --------------------------------------------------------------------------------------------
# small rotations cropped to their fill-free inner box (query side)

# A picture turned a few degrees and cut to the box that holds no fill has no corners to
# measure an angle from, and the cut is what costs most: PDQ of a copy that lost 2-4 % on
# every side is 60-90 bits from the original, about as far as the turn itself. Turning the
# copy back AND growing it to the original frame (the lost margins filled by repeating the
# edge pixels) brings a 2-3 degree copy to 4-66 bits (median ~25) of its original (quick
# suite, exact angle; 0.5 degree off: +5-15 bits).
# The angle: straight edges of documents, cards, posters and screenshots run along the
# frame's axes; the angle that makes the edge points' projections sharpest is the turn
# (within 0.6 degree for 13 of the quick suite's 41 inner-cut copies: adverts, receipts). Product
# photos (a garment on a floor) show no such angle; they get fixed guesses, unless their
# edges say they stand upright. Measured on the --quick suite: RESULTS.md, "Small
# rotations, session 3".
STRAIGHTEN = True
# Estimated from a copy this long: within ~0.1 degree on the quick suite's adverts.
STRAIGHTEN_SIDE = 192
STRAIGHTEN_MAX_DEGREES = 8.0
STRAIGHTEN_STEP_DEGREES = 0.25
# Share of pixels (strongest gradients) whose positions are projected.
STRAIGHTEN_EDGE_SHARE = 0.1
# The estimate is used when its projections are this much sharper than the upright ones
# (and the picture counts as upright when the upright ones are this much sharper).
STRAIGHTEN_CONFIDENCE = 1.2
# Without a confident estimate: turns tried as they are (PIL angles), for copies turned by
# about this much either way; the turned-back copy still matches within ~1 degree.
STRAIGHTEN_GUESSES = (2.5, -2.5)
# The turned-back copy is hashed from a grey copy at most this long (PDQ looks at 64x64).
RESTORE_SIDE = 512


def _grey_copy(image: Image.Image, side: int) -> Image.Image:
    """Grey copy, box-filtered to at most ``side`` long (reduced before the grey conversion:
    a query photo of several megapixels costs a fraction of a millisecond this way)."""
    factor = max(1, int(np.ceil(max(image.size) / side)))
    small = image.reduce(factor) if factor > 1 else image
    return small if small.mode == "L" else small.convert("L")


def _edge_points(grey: np.ndarray):
    """``(a, b, offset, weights, bins)`` of the strongest edge pixels (the
    STRAIGHTEN_EDGE_SHARE of them), for :func:`_projection_sharpness`; None if too few.

    A horizontal edge's point is projected on the vertical axis (v = y cos - x sin), a
    vertical edge's on the horizontal one (u = x cos + y sin): both are a cos + b sin +
    offset, the offset putting vertical edges' bins after the horizontal edges' ones.
    Positions are jittered by up to half a pixel: on the pixel grid every row is a perfect
    line at 0 degrees, which would favour the upright angle.
    """
    h, w = grey.shape
    gx = np.zeros_like(grey)
    gy = np.zeros_like(grey)
    gx[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
    gy[1:-1, :] = grey[2:, :] - grey[:-2, :]
    ax, ay = np.abs(gx), np.abs(gy)
    strength = ax + ay
    flat = strength.ravel()
    kth = int(len(flat) * (1 - STRAIGHTEN_EDGE_SHARE))
    threshold = max(float(np.partition(flat, kth)[kth]), 3 * EDGE_STEP)
    ys, xs = np.nonzero(strength > threshold)
    if len(xs) < 64:
        return None
    weights = strength[ys, xs]
    horizontal = ay[ys, xs] > ax[ys, xs]
    jitter = np.random.default_rng(0).uniform(-0.5, 0.5, (2, len(xs)))
    x = xs - w / 2 + jitter[0]
    y = ys - h / 2 + jitter[1]
    length = int(np.hypot(h, w)) + 4
    return (np.where(horizontal, y, x), np.where(horizontal, -x, y),
            np.where(horizontal, length / 2, length + length / 2), weights, 2 * length)


def _projection_sharpness(points, degrees: np.ndarray) -> np.ndarray:
    """Per angle: how sharply the edge points line up along the axes once turned by it: lines
    along the turned axes pile into few 1-pixel bins (sum of squared bin weights)."""
    a, b, offset, weights, bins = points
    theta = np.radians(np.asarray(degrees, np.float64))[:, None]
    index = (a * np.cos(theta) + b * np.sin(theta) + offset).astype(np.int64)
    index += (bins * np.arange(len(degrees)))[:, None]  # every angle in one bincount
    counts = np.bincount(index.ravel(), np.broadcast_to(weights, index.shape).ravel(),
                         bins * len(degrees)).reshape(len(degrees), bins)
    return np.einsum("ij,ij->i", counts, counts)


def _content_tilt(grey: Image.Image) -> tuple[float | None, bool]:
    """``(angle, upright)``: the angle (for PIL's ``rotate``) that turns the picture's straight
    edges back onto the axes, or None when no turn of DESKEW_MIN_DEGREES or more lines them
    up clearly better than the picture as it stands; ``upright``: the picture as it stands
    lines them up clearly better than any such turn. ``grey``: an "L" image, any size."""
    pixels = np.asarray(_grey_copy(grey, STRAIGHTEN_SIDE), dtype=np.float32)
    points = _edge_points(pixels) if min(pixels.shape) >= 32 else None
    if points is None:
        return None, False
    step = STRAIGHTEN_STEP_DEGREES
    # Coarse (two steps), then the best coarse angle's neighbours.
    coarse = np.arange(-STRAIGHTEN_MAX_DEGREES, STRAIGHTEN_MAX_DEGREES + 1e-9, 2 * step)
    sharpness = _projection_sharpness(points, coarse)
    upright = sharpness[np.argmin(np.abs(coarse))]
    turned = sharpness[np.abs(coarse) >= DESKEW_MIN_DEGREES].max()
    if upright >= STRAIGHTEN_CONFIDENCE * turned:
        return None, True
    top = float(coarse[int(np.argmax(sharpness))])
    fine = np.array([top - step, top, top + step])
    around = _projection_sharpness(points, fine)
    best = int(np.argmax(around))
    if around[best] < STRAIGHTEN_CONFIDENCE * upright:
        return None, False
    angle = float(fine[best])
    if best == 1:  # the parabola's top through the best and its neighbours
        a, b, c = around
        if a - 2 * b + c < 0:
            angle += float(0.5 * (a - c) / (a - 2 * b + c) * step)
    if abs(angle) < DESKEW_MIN_DEGREES:
        return None, False
    # Projected on axes turned by -theta (y down), the edges line up: the picture was turned
    # by -theta on screen, and PIL's rotate(theta) turns it back.
    return angle, False


def _restored_frame(grey: Image.Image, angle: float) -> Image.Image:
    """``grey``, taken as a picture turned by ``-angle`` and cut to its fill-free inner box,
    turned back by ``angle`` and grown to the picture's frame; the margins the cut took are
    filled by repeating the edge pixels (closer to the lost pixels than any flat colour)."""
    w, h = grey.size
    t = abs(np.tan(np.radians(angle)))
    # A W x H frame turned by a loses H*t/2 left and right, W*t/2 top and bottom.
    width, height = (w + h * t) / (1 - t * t), (h + w * t) / (1 - t * t)
    pad = int(np.ceil(max(width - w, height - h))) + 2
    padded = Image.fromarray(np.pad(np.asarray(grey), pad, mode="edge"))
    # Nearest neighbour: PDQ blurs the frame down to 64x64 anyway; a sixth of the bilinear
    # turn's cost, and the true pair's distance moved by < 1 bit on average (quick suite).
    turned = padded.rotate(angle, Image.Resampling.NEAREST)
    cx, cy = turned.width / 2, turned.height / 2
    return turned.crop((round(cx - width / 2), round(cy - height / 2),
                        round(cx + width / 2), round(cy + height / 2)))


def _straightened(image: Image.Image) -> list[Region]:
    """``straightened``: the picture turned back by the angle its edges show and grown to its
    frame; without a clear angle, ``turned:<angle>`` for each of STRAIGHTEN_GUESSES, unless
    its edges show it upright. The regions' ``source`` is the grey turned-back frame."""
    grey = _grey_copy(image, RESTORE_SIDE)
    angle, upright = _content_tilt(grey)
    if angle is not None:
        named = [("straightened", angle)]
    elif upright:  # its edges say it is not turned
        named = []
    else:
        named = [(f"turned:{guess:+g}", guess) for guess in STRAIGHTEN_GUESSES]
    out = []
    for name, turn in named:
        restored = _restored_frame(grey, turn)
        out.append(Region(name, (0, 0, restored.width, restored.height), restored))
    return out


# --------------------------------------------------------------------------------------------
# crop windows, dedup, the two public lists

def crop_windows(box: Box, windows=None) -> dict[str, Box]:
    """``box`` minus a share of its size on the sides each window names: ("l", 0.12) cuts 12 %
    off the left ("crop:l12"), ("lt", 0.06) 6 % off the left and the top ("crop:lt6")."""
    l, t, r, b = box
    out = {}
    for sides_cut, share in (CROP_WINDOWS if windows is None else windows):
        dw, dh = round((r - l) * share), round((b - t) * share)
        out[f"crop:{sides_cut}{round(share * 100)}"] = (
            l + dw * ("l" in sides_cut), t + dh * ("t" in sides_cut),
            r - dw * ("r" in sides_cut), b - dh * ("b" in sides_cut))
    return out


def crop_window_box(box, name: str):
    """The box of crop window ``name`` ("crop:lt6") of ``box`` (float coordinates allowed):
    the inverse of the names :func:`crop_windows` gives, or None for a name it never gives."""
    spec = name[len("crop:"):] if name.startswith("crop:") else ""
    sides_cut = spec.rstrip("0123456789")
    digits = spec[len(sides_cut):]
    if not sides_cut or not digits or set(sides_cut) - set("ltrb"):
        return None
    share = int(digits) / 100
    l, t, r, b = box
    dw, dh = (r - l) * share, (b - t) * share
    return (l + dw * ("l" in sides_cut), t + dh * ("t" in sides_cut),
            r - dw * ("r" in sides_cut), b - dh * ("b" in sides_cut))


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _distinct(image: Image.Image, named_boxes) -> list[Region]:
    """Regions in order, skipping any box nearly equal to one already kept."""
    kept: list[Region] = []
    boxes = np.empty((0, 4), np.float64)  # the kept boxes, for one vectorised IoU per box
    for name, box in named_boxes:
        too_small = box[2] - box[0] < 8 or box[3] - box[1] < 8
        if too_small and name != "full":  # the full frame is always hashed, however small
            continue
        if len(kept) == 0 or _ious(box, boxes).max() < DEDUP_IOU:
            kept.append(Region(name, box, image))
            boxes = np.vstack([boxes, box])
    return kept


def _ious(box: Box, others: np.ndarray) -> np.ndarray:
    """:func:`iou` of ``box`` with each row of ``others`` (n, 4)."""
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = ix * iy
    union = ((box[2] - box[0]) * (box[3] - box[1])
             + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def storage_regions(image: Image.Image, crops: bool = False, boxes=None) -> list[Region]:
    """Regions to fingerprint and store for a known image: full, content, embedded (each only
    if distinct); with ``crops`` (what the Index stores), also the crop windows of the content
    region (``CROP_WINDOWS``). ``boxes``: ``find_boxes(image, framed=False)`` if the caller
    has it."""
    if boxes is None:
        boxes = find_boxes(image, framed=False)  # framed rectangles are a query-side search
    named = [("full", boxes["full"]), ("content", boxes["content"]),
             ("embedded", boxes["embedded"])]
    if crops:
        named += list(crop_windows(boxes["content"]).items())
    return _distinct(image, named)


def query_regions(image: Image.Image, embedded_steps: bool = True) -> list[Region]:
    """Regions to fingerprint for a query: full, content, embedded and (``embedded_steps``)
    the earlier steps of the embedded search, edge-framed rectangles, each only if distinct;
    and, for a picture turned a few degrees on filled corners, ``deskewed`` (its ``source``
    is the turned-back image, not ``image``); otherwise, for a picture turned and cut to its
    fill-free inner box, ``straightened`` or ``turned:<angle>`` (:func:`_straightened`)."""
    boxes = find_boxes(image)
    names = ["full", "content", "embedded"]
    if embedded_steps:
        names += sorted(name for name in boxes if name.startswith(("content:", "embedded:")))
    names += sorted(name for name in boxes if name.startswith("framed:"))
    found = _distinct(image, [(name, boxes[name]) for name in names])
    deskewed = _deskewed(image) if DESKEW else []
    found += deskewed
    if STRAIGHTEN and not deskewed:  # filled corners gave the angle already
        found += _straightened(image)
    return found


def _deskewed(image: Image.Image) -> list[Region]:
    arr, sx, sy = _analysis_array(image)
    tilt = _tilt(arr)
    if tilt is None:
        return []
    angle, fill, xs, ys = tilt
    grey = image if image.mode == "L" else image.convert("L")
    turned = grey.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=fill)
    # Where the picture's outline lands in ``turned``: rotate() turns about the centre,
    # counter-clockwise on screen, and centres the result on the expanded canvas.
    a = np.radians(angle)
    dx, dy = xs * sx - image.width / 2, ys * sy - image.height / 2
    u = turned.width / 2 + dx * np.cos(a) + dy * np.sin(a)
    v = turned.height / 2 - dx * np.sin(a) + dy * np.cos(a)
    # The picture's sides are on the outline's extremes; a few noisy points are not.
    box = (int(np.ceil(np.percentile(u, 1))), int(np.ceil(np.percentile(v, 1))),
           int(np.percentile(u, 99)), int(np.percentile(v, 99)))
    box = (max(0, box[0]), max(0, box[1]), min(turned.width, box[2]), min(turned.height, box[3]))
    if not _plausible(box, turned.width, turned.height):
        return []
    return [Region("deskewed", box, turned)]


# --------------------------------------------------------------------------------------------
# hashing copy and the decision rule

# The decision's thresholds (why each value: hashmatch.policy.MatchPolicy).
PDQ_MAX_DISTANCE = MATCH_POLICY.region_max_distance
PDQ_MARGIN = MATCH_POLICY.region_margin
REGION_PENALTY = MATCH_POLICY.region_penalty  # by name prefix: "embedded:1" pays it too
MIN_QUALITY = MATCH_POLICY.region_min_quality

def region_penalty(name: str) -> int:
    """Bits added to a pair's distance when one side is region ``name``."""
    return max((p for prefix, p in REGION_PENALTY.items() if name.startswith(prefix)), default=0)


# --------------------------------------------------------------------------------------------
# fingerprints of regions (what the Index stores and searches)

def _pixels(image: Image.Image) -> np.ndarray:
    """The decoded image as an array PDQ can read (grey or RGB), without a copy if possible."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return np.asarray(image)


def _hash_box(pixels: np.ndarray, box: Box, dihedral: bool = False):
    """PDQ (fast) of ``pixels`` inside ``box``: a view, no copy. An array carries no draft
    record, so a region is blurred at its own (decoded) scale."""
    from .hashers.pdq import pdq_hash_image

    l, t, r, b = box
    return pdq_hash_image(pixels[t:b, l:r], exact=False, dihedral=dihedral)


def storage_fingerprints(image: Image.Image, full=None, boxes=None
                         ) -> list[tuple[str, "Fingerprint"]]:
    """``(region name, PDQ fingerprint)`` to store for a known image, the full frame first.

    ``full``: the full frame's fingerprint if the caller has it already (hash_file's, so the
    stored full row equals what ``hashmatch hash`` prints). Other regions are hashed in fast
    mode from the same decoded pixels.
    """
    from .hashers.pdq import pdq_hash_boxes, pdq_hash_image

    stored = storage_regions(image, crops=STORE_CROP_WINDOWS, boxes=boxes)
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


def query_fingerprints(image: Image.Image, full_variants=None, regions: bool = True
                       ) -> list[tuple["Fingerprint", str, str]]:
    """``(fingerprint, region, variant)`` needles for a query image (:func:`query_needles`
    without the aligner)."""
    return query_needles(image, full_variants, regions)[0]


def query_needles(image: Image.Image, full_variants=None, regions: bool = True
                  ) -> tuple[list[tuple["Fingerprint", str, str]], Aligner | None]:
    """``(fingerprint, region, variant)`` needles for a query image, and the
    :class:`Aligner` of its regions (None without regions or with ``ALIGN`` off).

    The full frame comes in PDQ's 8 rotations/flips (``full_variants``: the caller's, if it
    has them), searched against stored full frames only; every other region (content,
    embedded and its earlier steps) as is and mirrored, searched against every stored row.
    A mirrored meme or post is common; the other rotations of a region are not worth the
    query cost (RESULTS.md, "Robustness").
    """
    from .hashers.pdq import MIRROR, VARIANT_NAMES, pdq_hash_image

    if full_variants is None:
        full_variants = pdq_hash_image(image, exact=False, dihedral=True)
    needles = [(fp, "full", name) for fp, name in zip(full_variants, VARIANT_NAMES)]
    if not regions:
        return needles, None
    pixels = _pixels(image)
    found = query_regions(image)
    for region in found:
        if region.name == "full":
            continue
        if _is_straightened(region.name):  # a mirrored and turned re-post: rare, not worth it
            needles.append((_hash_box(_pixels(region.source), region.box), region.name,
                            VARIANT_NAMES[0]))
            continue
        variants = (_hash_box(pixels, region.box, dihedral=True) if region.source is image
                    else _hash_box(_pixels(region.source), region.box, dihedral=True))
        needles.append((variants[0], region.name, VARIANT_NAMES[0]))
        needles.append((variants[MIRROR], region.name, VARIANT_NAMES[MIRROR]))
    # The aligner also carries the pixels verification compares (hashmatch.verify); whether
    # alignment runs is the search's choice (ALIGN).
    return needles, Aligner.of(image, found)


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
ALIGN = True
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
        from .hashers.pdq import MIRROR

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


# --------------------------------------------------------------------------------------------
# the decision rule, in one place for the Index and the benchmark

# A pair this close is a match whatever else is near (hashmatch.policy.MatchPolicy.certain).
PDQ_CERTAIN = MATCH_POLICY.certain
# Stored items whose full frames are this close are one picture for the margin test.
DUPLICATE_DISTANCE = MATCH_POLICY.duplicate_distance


# Stored rows fall in three roles, each kept in its own code index so that a needle scans
# only the rows it may pair with; a query reads each role's codes once, with every needle
# that may meet them (hashmatch.search.search_shard; cost: RESULTS.md, "Query cost at 1M").
ROLES = ("full", "region", "crop")


def stored_role(stored_region: str) -> str:
    if stored_region == "full":
        return "full"
    return "crop" if stored_region.startswith("crop:") else "region"


CROP_SEARCHERS = ("full", "content", "deskewed")


def search_roles(query_region: str, query_variant: str) -> tuple[str, ...]:
    """The stored roles a query needle is compared with: rotated/flipped full frames meet
    stored full frames only; the whole picture as it stands (full, content, deskewed; not
    mirrored) meets everything, crop windows included (a cropped copy's frame is near a
    stored window); pictures cut out of a screenshot or post meet full frames and regions;
    mirrored cut-outs and turned-back frames (straightened, turned:N: what they rebuild is
    the whole frame) meet full frames only -- on the benchmark no query was found through
    their pairs with stored regions alone (RESULTS.md, "Query cost at 1M, session 5"). Crop
    windows are most of the stored rows, regions the next largest share: every needle kept
    off them is a pass saved."""
    if query_region == "full" and query_variant != "original":
        return ("full",)
    if query_region in CROP_SEARCHERS and query_variant == "original":
        return ROLES
    if query_variant != "original" or _is_straightened(query_region):
        return ("full",)
    return ("full", "region")


def _is_straightened(region_name: str) -> bool:
    return region_name == "straightened" or region_name.startswith("turned:")


def select_matches(scores: np.ndarray, max_distance: int, margin: int | None = None,
                   certain: int | None = None, groups: np.ndarray | None = None) -> np.ndarray:
    """Which items of each query row match: a boolean array shaped like ``scores``.

    ``scores``: (n_queries, n_items) best pair score per item (large = no candidate). An item
    matches if its score is <= ``max_distance`` and either <= ``certain``, or it belongs to
    the row's best group and every item outside that group scores at least ``margin`` more.
    ``groups``: (n_queries, n_items) group label per item (near-duplicate items share one);
    None = every item its own group. Runner-ups count whatever their score, so the answer at
    a smaller ``max_distance`` is the answer at a larger one cut at ``max_distance``.
    """
    margin = PDQ_MARGIN if margin is None else margin
    certain = PDQ_CERTAIN if certain is None else certain
    scores = np.asarray(scores)
    n_rows, n_items = scores.shape
    matched = (scores <= min(max_distance, certain))
    if n_items == 0:
        return matched
    rows = np.arange(n_rows)
    best_item = np.argmin(scores, axis=1)
    best = scores[rows, best_item]
    if groups is None:
        groups = np.broadcast_to(np.arange(n_items), scores.shape)
    same_group = groups == groups[rows, best_item][:, None]
    outside = np.where(same_group, np.iinfo(np.int64).max, scores.astype(np.int64)).min(axis=1)
    wins = (outside - best >= margin) & (best <= max_distance)
    matched |= wins[:, None] & same_group & (scores <= max_distance)
    return matched
