"""Coverage-guided fuzzing of decode+hash (atheris/libFuzzer), with a hypothesis fallback.

Run as a script, in its own process (a crash of native code is then a finding, not a dead
test runner)::

    python tests/reliability/fuzz_target.py SECONDS SEED_DIR [--engine atheris|hypothesis]

An input fails when hashing it raises anything but ``hashmatch.ImageError``. With atheris,
libFuzzer reports on stderr (``Done N runs in S second(s)``, ``stat::peak_rss_mb``) and exits
non-zero on a failure, a native crash, a per-input timeout or the RSS limit. The hypothesis
engine prints one JSON line ``{"engine", "inputs", "seconds", "failures": [...]}`` and exits
0 (failures are in the list).
"""
from __future__ import annotations

import json
import os
import sys
import time

PER_INPUT_TIMEOUT_S = 20
RSS_LIMIT_MB = 1024
SPECS = (("pdq", False), ("pdq", True), ("phash", False))
_count = 0


def _check(data: bytes, hm) -> None:
    global _count
    _count += 1
    for algorithm, exact in SPECS:
        try:
            hm.hash_file(data, algorithm, exact=exact)
        except hm.ImageError as exc:
            if exc.source != "<bytes>":
                raise AssertionError(f"ImageError does not name the input: {exc}") from None


def _seeds(seed_dir: str) -> list[bytes]:
    return [open(os.path.join(seed_dir, n), "rb").read() for n in sorted(os.listdir(seed_dir))]


def run_atheris(seconds: int, seed_dir: str) -> None:
    import atheris

    with atheris.instrument_imports():  # coverage of hashmatch and Pillow's Python parsers
        import PIL.Image  # noqa: F401
        import PIL.GifImagePlugin  # noqa: F401
        import PIL.JpegImagePlugin  # noqa: F401
        import PIL.PngImagePlugin  # noqa: F401
        import PIL.TiffImagePlugin  # noqa: F401
        import PIL.BmpImagePlugin  # noqa: F401
        import PIL.IcoImagePlugin  # noqa: F401
        import PIL.WebPImagePlugin  # noqa: F401
        import hashmatch as hm
        import hashmatch.decode  # noqa: F401
    import warnings

    warnings.simplefilter("ignore")  # Pillow warns on every odd header; noise, not findings
    def one_input(data: bytes) -> None:
        _check(data, hm)

    work = os.path.join(os.path.dirname(seed_dir.rstrip("/")), "atheris-corpus")
    os.makedirs(work, exist_ok=True)
    atheris.Setup([sys.argv[0], work, seed_dir, f"-max_total_time={seconds}",
                   f"-timeout={PER_INPUT_TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}",
                   "-max_len=65536", "-print_final_stats=1"], one_input)
    atheris.Fuzz()


def run_hypothesis(seconds: int, seed_dir: str) -> None:
    import random
    import warnings

    from hypothesis import HealthCheck, given, settings, strategies as st

    import hashmatch as hm

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import corpus

    warnings.simplefilter("ignore")
    seeds = _seeds(seed_dir)
    failures = []
    started = time.monotonic()

    @st.composite
    def inputs(draw):
        how = draw(st.sampled_from(["mutant", "mutant", "mutant", "random", "splice"]))
        if how == "random":
            return draw(st.binary(max_size=4096))
        data = draw(st.sampled_from(seeds))
        rng = random.Random(draw(st.integers(0, 2**32)))
        if how == "splice":
            other = draw(st.sampled_from(seeds))
            cut = draw(st.integers(0, len(data)))
            return data[:cut] + other[draw(st.integers(0, len(other))):]
        for _ in range(draw(st.integers(1, 4))):
            data = corpus.mutate(data, rng)[1]
        return data

    @settings(max_examples=200, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(inputs())
    def property_(data):
        if time.monotonic() - started > seconds:
            return
        try:
            _check(data, hm)
        except Exception as exc:  # noqa: BLE001 - record and keep going
            failures.append({"error": f"{type(exc).__name__}: {exc}", "input_hex": data[:256].hex()})

    # hypothesis has no wall-clock budget of its own: run rounds until the time is up.
    while time.monotonic() - started < seconds:
        try:
            property_()
        except Exception as exc:  # noqa: BLE001
            failures.append({"error": f"hypothesis: {type(exc).__name__}: {exc}"})
            break
    print(json.dumps({"engine": "hypothesis", "inputs": _count,
                      "seconds": round(time.monotonic() - started, 1), "failures": failures}),
          flush=True)


def atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    seconds, seed_dir = int(sys.argv[1]), sys.argv[2]
    engine = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--engine" else (
        "atheris" if atheris_available() else "hypothesis")
    if engine == "atheris":
        run_atheris(seconds, seed_dir)
    else:
        run_hypothesis(seconds, seed_dir)
