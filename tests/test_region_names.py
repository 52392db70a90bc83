"""Region names (hashmatch.regions.RegionName): every name the pipeline writes -- into the
store, into a query's needles, into a Match -- parses and is written back exactly as it was
(databases of earlier versions hold these strings), and malformed text is refused clearly."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hashmatch as hm
from hashmatch.formats import describe_how
from hashmatch import regions
from hashmatch.regions import RegionName, RegionNameError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import edits  # noqa: E402

from conftest import corpus_files  # noqa: E402

KNOWN = sorted((ROOT / "examples" / "known").glob("*"))
REPOSTS = sorted((ROOT / "examples" / "reposts").glob("*"))


def _query_images() -> list[Image.Image]:
    """The bundled re-posts, and pictures turned a few degrees: on filled corners
    (deskewed) and cut to their inner box (straightened, or turned:N guesses)."""
    images = [Image.open(path).convert("RGB") for path in REPOSTS]
    photo = Image.open(corpus_files()[0]).convert("RGB")
    images.append(photo.rotate(4, Image.Resampling.BICUBIC, expand=True,
                               fillcolor=(255, 255, 255)))
    images.append(edits.turn_inner(edits.price_poster(np.random.default_rng(3)), 2.6))
    images.append(edits.turn_inner(photo, 3.0))
    return images


@pytest.fixture(scope="module")
def written_names() -> set[str]:
    """Every region name the pipeline wrote for real images: stored rows, query needles,
    and the regions of the matches of an Index of the bundled examples."""
    names: set[str] = set()
    for path in corpus_files()[:6] + KNOWN:
        image = Image.open(path).convert("RGB")
        names.update(name for name, _ in regions.storage_fingerprints(image))
    for image in _query_images():
        needles, _ = regions.query_needles(image)
        names.update(region for _, region, _ in needles)
    return names


@pytest.fixture(scope="module")
def matched_names(tmp_path_factory) -> set[str]:
    with hm.Index.open(tmp_path_factory.mktemp("names") / "known.hmdb", create=True) as index:
        index.add_files(KNOWN, workers=1)
        cropped = Image.open(KNOWN[0]).convert("RGB")
        cropped = cropped.crop((cropped.width // 11, 0, cropped.width, cropped.height))
        matches = [m for source in REPOSTS + [cropped] for m in index.query(source)]
    return {m.query_region for m in matches} | {m.stored_region for m in matches}


def test_every_name_the_pipeline_writes_is_read_and_written_back_unchanged(
        written_names, matched_names):
    for text in written_names | matched_names:
        name = RegionName.parse(text)
        assert str(name) == text
        assert RegionName.parse(str(name)) == name
        assert str(RegionName.parse(str(name.with_aligned()))) == text.removesuffix("+aligned") \
            + "+aligned"
    kinds = {RegionName.parse(text).kind for text in written_names}
    # the images above make every kind of name (else this test would miss one's spelling)
    assert {"full", "content", "embedded", "crop", "framed", "deskewed"} <= kinds
    assert kinds & {"straightened", "turned"} and "turned:+2.5" in written_names
    assert any(RegionName.parse(text).step for text in written_names)  # content:N / embedded:N
    assert any(RegionName.parse(text).aligned for text in matched_names)


def test_names_of_earlier_versions_still_read():
    # corner crop windows were spelled with the sides in another order before session 8
    for text in ("crop:rt6", "crop:lb6", "crop:l12", "crop:lt18", "embedded", "content"):
        assert str(RegionName.parse(text)) == text
    assert regions.stored_role("crop:rt6") == "crop"
    assert regions.crop_window_box((0, 0, 100, 200), "crop:rt6") == (0, 12.0, 94.0, 200)


@pytest.mark.parametrize("text", ["", "fulll", "framed", "content:0", "content:01", "full:1",
                                  "crop:", "crop:l", "crop:x12", "crop:ll12", "crop:l12.5",
                                  "turned:2.5", "turned:+2.50", "turned:+", "deskewed+aligned+aligned",
                                  "full+ aligned", " full"])
def test_a_malformed_name_is_refused_with_a_clear_error(text):
    with pytest.raises(RegionNameError, match="is not a region name") as raised:
        RegionName.parse(text)
    assert isinstance(raised.value, ValueError) and repr(text) in str(raised.value)
    assert RegionName.try_parse(text) is None


def test_a_name_hashmatch_does_not_write_is_a_plain_region_for_the_search():
    """A hash list made elsewhere may carry any region text: stored, it neither breaks the
    search nor takes the role, penalty or words of a name it only resembles."""
    foreign = "crop:0,0,10,10"
    assert RegionName.try_parse(foreign) is None
    assert regions.stored_role(foreign) == "region" and regions.region_penalty(foreign) == 0
    assert regions.crop_window_box((0, 0, 100, 100), foreign) is None
    assert describe_how("original", "full", foreign) == f"as is, {foreign}"
