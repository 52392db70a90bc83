"""The thresholds a user reads (CLI help, README) are the ones the matcher uses
(hashmatch.policy.MatchPolicy), and a query's defaults resolve as documented."""
import pathlib
import re

import pytest

from hashmatch.cli import main
from hashmatch.fingerprint import ALGORITHMS
from hashmatch.policy import MatchPolicy

POLICY = MatchPolicy()
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _option_help(command: str, name: str) -> str:
    (option,) = [p for p in main.commands[command].params if p.name == name]
    return option.help


def _per_algorithm(words: str) -> dict[str, int]:
    """'10 for phash/dhash/ahash, 20 for grid' -> {'phash': 10, ..., 'grid': 20}."""
    out = {}
    for radius, names in re.findall(r"(\d+) for ([a-z/]+)", words):
        out.update({name: int(radius) for name in names.split("/")})
    return out


def _others() -> dict[str, int]:
    return {a: POLICY.default_max_distance(a) for a in ALGORITHMS if a != "pdq"}


@pytest.mark.parametrize("command", ["query", "report"])
def test_match_commands_state_the_policys_default_radii(command):
    text = _option_help(command, "max_distance")
    found = re.search(r"default: (\d+) for pdq, (\d+) with --whole-images, ([^)]*)\)", text)
    assert found, text
    assert int(found[1]) == POLICY.default_max_distance("pdq", regions=True)
    assert int(found[2]) == POLICY.default_max_distance("pdq", regions=False)
    assert _per_algorithm(found[3]) == _others()


def test_dedup_states_the_policys_default_radii():
    text = _option_help("dedup", "max_distance")
    found = re.search(r"default: (\d+) for pdq, ([^)]*)\)", text)
    assert found, text
    assert int(found[1]) == POLICY.default_max_distance("pdq")
    assert _per_algorithm(found[2]) == _others()


def test_readme_states_the_policys_defaults():
    text = " ".join(README.read_text(encoding="utf-8").split())
    claims = [  # (README wording with the figure as a group, the policy's value)
        (r"30-(\d+) = a copy in a new frame", POLICY.region_max_distance),
        (r"as plain PDQ does \(radius (\d+)\)", POLICY.plain_pdq_distance),
        (r"whole image, any rotation or flip, DIST <= (\d+)\)", POLICY.plain_pdq_distance),
        (r"`score` \(distance \+ (\d+) when that pair involves a loosely cut-out region",
         POLICY.region_penalty["embedded"]),
        (r"within `max_distance` \((\d+); pairs up to \d+ bits beyond it",
         POLICY.region_max_distance),
        (r"within `max_distance` \(\d+; pairs up to (\d+) bits beyond it",
         POLICY.region_margin),
        (r"the (\d+) closest are \*\*verified\*\*", POLICY.verify_candidates),
        (r"\(PDQ quality < (\d+)\)", POLICY.region_min_quality),
        (r"`--max-distance` of each other \(default (\d+) for PDQ",
         POLICY.default_max_distance("pdq")),
        (r"\(default \d+ for PDQ, (\d+) for phash/dhash/ahash\)",
         POLICY.default_max_distance("phash")),
        (r"full frames scanned exactly at radius (\d+)",
         POLICY.region_max_distance + POLICY.region_margin),
    ]
    for pattern, value in claims:
        stated = [int(n) for n in re.findall(pattern, text)]
        assert stated, f"README no longer says {pattern!r}: update this test with it"
        assert stated == [value] * len(stated), (pattern, stated, value)


def test_a_query_resolves_its_defaults_by_algorithm_and_regions():
    regional = POLICY.resolve("pdq", regions=True)
    assert (regional.max_distance, regional.min_quality, regional.margin) == (
        POLICY.region_max_distance, POLICY.region_min_quality, POLICY.region_margin)
    whole = POLICY.resolve("pdq", regions=False)
    assert (whole.max_distance, whole.min_quality, whole.margin) == (
        POLICY.max_distances["pdq"], None, 0)
    # regions only concern PDQ; what a caller gives wins
    assert POLICY.resolve("phash", regions=True).max_distance == POLICY.max_distances["phash"]
    given = POLICY.resolve("pdq", True, max_distance=40, min_quality=0, margin=3)
    assert (given.max_distance, given.min_quality, given.margin) == (40, 0, 3)


def test_the_policy_cannot_be_changed_in_place():
    with pytest.raises(AttributeError):
        POLICY.region_max_distance = 100
    with pytest.raises(TypeError):
        POLICY.max_distances["pdq"] = 64
