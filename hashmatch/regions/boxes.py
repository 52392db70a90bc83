"""Finding the rectangles of an image worth fingerprinting, on a small copy of it.

``full`` (the whole frame), ``content`` (uniform borders trimmed), ``embedded`` (flat bands
with text or UI chrome trimmed too: the picture inside a post, meme or screenshot), their
earlier trimming steps and the rectangles framed by straight edges (query side): see the
package's docstring (:mod:`hashmatch.regions`) for what each is for. Also the :class:`Region`
value, box overlap (IoU, near-duplicate boxes dropped) and the PDQ of a box.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .. import _imagecore
from .config import DEFAULT_REGION_CONFIG, RegionConfig
from .names import RegionName

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
# Boxes within this IoU of an earlier one would fingerprint (almost) the same pixels. Not
# looser: a box 3 % off on each side (IoU 0.9) moves PDQ by 30-60 bits, and an edge-framed
# rectangle dropped as a near-duplicate of a looser box was the one that fitted (full suite:
# 0.9 -> 0.95 raised recall at 1 % false alarm from 0.844 to 0.862).
DEDUP_IOU = 0.95


@dataclass(frozen=True)
class Region:
    """A named rectangle of a source image; ``image()`` gives its pixels."""

    name: str  # "full", "content", "embedded", "crop:l12", ... (str() of a RegionName)
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


def find_boxes(image: Image.Image, framed: bool = True,
               config: RegionConfig = DEFAULT_REGION_CONFIG) -> dict[str, Box]:
    """``{"full", "content", "embedded"}`` boxes in image pixel coordinates, plus
    ``"embedded:1"``, ``"embedded:2"``: earlier (less trimmed) steps of the embedded search,
    and (``framed`` and ``config.framed``) ``"framed:N"``: rectangles framed by straight
    edges. ``config.refine``: sides snapped to edges of the full-resolution pixels."""
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
    if framed and config.framed:
        for i, box in enumerate(_framed_rectangles(arr)):
            boxes[str(RegionName("framed", step=i + 1))] = _to_image_box(box, sx, sy, image.size)
    if config.refine and (sx > 1 or sy > 1):
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
        boxes[str(RegionName(name, step=i + 1))] = _to_image_box(box, sx, sy, size)


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
# overlap of boxes (near-duplicates are dropped), and the PDQ of a box

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


def _pixels(image: Image.Image) -> np.ndarray:
    """The decoded image as an array PDQ can read (grey or RGB), without a copy if possible."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return np.asarray(image)


def _hash_box(pixels: np.ndarray, box: Box, dihedral: bool = False):
    """PDQ (fast) of ``pixels`` inside ``box``: a view, no copy. An array carries no draft
    record, so a region is blurred at its own (decoded) scale."""
    from ..hashers.pdq import pdq_hash_image

    l, t, r, b = box
    return pdq_hash_image(pixels[t:b, l:r], exact=False, dihedral=dihedral)
