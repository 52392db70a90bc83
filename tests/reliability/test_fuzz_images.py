"""Image fuzzing: every input gives a fingerprint or one hashmatch.ImageError naming the file.

Never another exception, a crash (each file is hashed in a watched child process), a hang
(per-file timeout) or unbounded memory (peak RSS of a fresh child per bomb). The long runs
(many seeds, minutes of coverage-guided fuzzing) are in benchmarks/reliability.py.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from . import corpus
from .harness import HERE, run_files

RSS_BOUND_MB = 300
PER_FILE_TIMEOUT_S = 20
SHORT_FUZZ_SECONDS = int(os.environ.get("HASHMATCH_FUZZ_SECONDS", "15"))


def _truncation_sweep() -> list[tuple[str, bytes, str]]:
    """Every base format cut at 24 evenly spaced offsets; the animated GIF (whose later frames
    Pillow parses lazily) at every 7th byte."""
    cases = []
    for name, data in corpus.base_images(0).items():
        step = 7 if name == "base.gif" else max(1, len(data) // 24)
        stem, ext = name.rsplit(".", 1)
        for cut in range(1, len(data), step):
            cases.append((f"cut-{stem}-{cut:06d}.{ext}", data[:cut], "any"))
    return cases


def _assert_contract(written, outcomes):
    problems = []
    for (path, expect), outcome in zip(written, outcomes):
        assert outcome.path == path
        if outcome.status in ("other", "crash", "hang"):
            problems.append(f"{os.path.basename(path)}: {outcome.status}: {outcome.detail}")
        elif expect != "any" and outcome.status != expect:
            problems.append(f"{os.path.basename(path)}: expected {expect}, got {outcome.status}"
                            f" ({outcome.detail})")
    assert not problems, "\n".join(problems[:20])


def test_corpus_of_broken_files_hashes_or_names_the_file(tmp_path):
    cases = corpus.build(seed=0, n_mutants=300) + _truncation_sweep()
    written = corpus.write(tmp_path / "corpus", cases)
    outcomes = run_files([p for p, _ in written], timeout=PER_FILE_TIMEOUT_S)
    assert len(outcomes) == len(written) > 1000
    _assert_contract(written, outcomes)
    statuses = {o.status for o in outcomes}
    assert statuses == {"ok", "error"}  # the corpus really exercises both sides
    errors = [o for o in outcomes if o.status == "error"]
    assert all(o.detail for o in errors), "every error has a reason"


def test_decompression_bombs_are_refused_in_bounded_memory(tmp_path):
    written = corpus.write(tmp_path, [(n, d, "error") for n, d in corpus.bombs().items()])
    outcomes = run_files([p for p, _ in written], timeout=PER_FILE_TIMEOUT_S,
                         fresh_process_each=True)
    for (path, _), outcome in zip(written, outcomes):
        name = os.path.basename(path)
        assert outcome.status == "error", (name, outcome.status, outcome.detail)
        assert all(r["detail"] == "too large" for r in outcome.per_spec) or \
            "negative" in name or "wide" in name, (name, outcome.per_spec)
        assert outcome.rss_mb < RSS_BOUND_MB, f"{name}: peak RSS {outcome.rss_mb:.0f} MB"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_special_files_are_errors_not_hangs(tmp_path):
    # Seized file-system extractions hold FIFOs and device nodes with any name.
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    dangling = tmp_path / "dangling.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    paths = [str(p) for p in (fifo, zero, folder, dangling)]
    outcomes = run_files(paths, timeout=10)
    assert [o.status for o in outcomes] == ["error"] * 4, [(o.status, o.detail) for o in outcomes]
    assert [o.detail for o in outcomes] == ["not a regular file", "not a regular file",
                                            "is a directory", "file not found"]
    assert all(o.rss_mb < 200 for o in outcomes)  # /dev/zero was not read into memory


def test_coverage_guided_fuzzing_finds_nothing(tmp_path):
    """atheris (libFuzzer, coverage of hashmatch and Pillow's Python parsers) when installed,
    else hypothesis; SHORT_FUZZ_SECONDS here, minutes in benchmarks/reliability.py."""
    seeds = tmp_path / "seeds"
    corpus.write(seeds, [(n, d, "ok") for n, d in corpus.base_images(0).items()])
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "fuzz_target.py"), str(SHORT_FUZZ_SECONDS),
         str(seeds)], capture_output=True, text=True, timeout=SHORT_FUZZ_SECONDS + 120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    summary = parse_fuzz_output(output)
    assert summary["failures"] == [] and summary["inputs"] > 100, summary


def parse_fuzz_output(output: str) -> dict:
    for line in output.splitlines():
        if line.startswith('{"engine"'):
            return json.loads(line)
    done = re.search(r"Done (\d+) runs in (\d+) second", output)
    rss = re.search(r"stat::peak_rss_mb:\s+(\d+)", output)
    assert done, output[-4000:]
    return {"engine": "atheris", "inputs": int(done.group(1)), "seconds": int(done.group(2)),
            "peak_rss_mb": int(rss.group(1)) if rss else None, "failures": []}
