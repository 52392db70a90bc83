"""Long reliability runs (issue 7): fuzzing, bombs, SIGKILL runs, readers vs writer.

    .venv/bin/python benchmarks/reliability.py                 # ~6 minutes on 2 cores
    HASHMATCH_LONG_FUZZ=1 .venv/bin/python benchmarks/reliability.py   # ~30 minutes

Writes the figures (inputs tried, crashes, items lost, peak RSS on bombs, reader errors) into
benchmarks/RESULTS.md between the RELIABILITY markers, with this command. The same checks at
short length run in `make test` (tests/reliability/).
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from reliability import corpus, harness  # noqa: E402

import hostile_decodes  # noqa: E402  (benchmarks/: the script's folder is on sys.path)
from reliability.test_fuzz_images import _truncation_sweep, parse_fuzz_output  # noqa: E402

LONG = os.environ.get("HASHMATCH_LONG_FUZZ") == "1"
SEEDS = range(1, 41) if LONG else range(1, 11)
MUTANTS_PER_SEED = 2000
FUZZ_SECONDS = 1500 if LONG else 180
KILL_RUNS = 60 if LONG else 20
CONCURRENCY_SECONDS = 120 if LONG else 30


def fuzz_corpus(work: str) -> dict:
    totals = {"inputs": 0, "ok": 0, "error": 0, "other": 0, "crash": 0, "hang": 0,
              "max_rss_mb": 0.0, "findings": []}
    started = time.monotonic()
    sets = [("sweep", _truncation_sweep())] + [
        (f"seed{seed}", corpus.build(seed=seed, n_mutants=MUTANTS_PER_SEED)) for seed in SEEDS]
    for label, cases in sets:
        folder = os.path.join(work, label)
        written = corpus.write(folder, cases)
        outcomes = harness.run_files([p for p, _ in written], timeout=30)
        for (path, expect), outcome in zip(written, outcomes):
            totals["inputs"] += 1
            totals[outcome.status] += 1
            totals["max_rss_mb"] = max(totals["max_rss_mb"], outcome.rss_mb)
            wrong = expect != "any" and outcome.status != expect
            if outcome.status in ("other", "crash", "hang") or wrong:
                totals["findings"].append(f"{os.path.basename(path)}: {outcome.status}: "
                                          f"{outcome.detail[:300]}")
        print(f"  {label}: {len(cases)} files, {sum(totals[s] for s in ('other', 'crash', 'hang'))}"
              " findings so far", flush=True)
        for path, _ in written:
            os.unlink(path)
    totals["seconds"] = round(time.monotonic() - started)
    return totals


def bombs(work: str) -> dict:
    baseline = int(subprocess.check_output(
        [sys.executable, os.path.join(REPO, "tests", "reliability", "harness.py"),
         "baseline"]).decode()) / 1024
    cases = [(n, d, "error") for n, d in corpus.bombs().items()]
    written = corpus.write(os.path.join(work, "bombs"), cases)
    outcomes = harness.run_files([p for p, _ in written], timeout=30, fresh_process_each=True)
    refused = sum(o.status == "error" for o in outcomes)
    return {"files": len(outcomes), "refused": refused,
            "max_rss_mb": max(o.rss_mb for o in outcomes), "baseline_rss_mb": baseline,
            "statuses": {os.path.basename(p): o.status for (p, _), o in zip(written, outcomes)}}


def coverage_guided(work: str) -> dict:
    seeds = os.path.join(work, "seeds")
    corpus.write(seeds, [(n, d, "ok") for n, d in corpus.base_images(0).items()])
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "reliability", "fuzz_target.py"),
         str(FUZZ_SECONDS), seeds], capture_output=True, text=True, timeout=FUZZ_SECONDS + 600)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        return {"engine": "atheris?", "inputs": None, "failures": [output[-3000:]]}
    summary = parse_fuzz_output(output)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", output)
    if cov:
        summary["coverage_edges"], summary["features"] = map(int, cov[-1])
    return summary


def pytest_run(test: str, env: dict) -> tuple[bool, str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"tests/reliability/test_index_faults.py::{test}"],
        cwd=REPO, env=dict(os.environ, **env), capture_output=True, text=True)
    return result.returncode == 0, result.stdout[-2000:]


def concurrency(work: str) -> dict:
    from reliability.test_index_faults import run_readers_and_writer

    import hashmatch as hm

    helpers = os.path.join(work, "helpers")
    os.makedirs(helpers, exist_ok=True)
    with open(os.path.join(helpers, "test_index_faults_helpers.py"), "w") as f:
        f.write("import numpy as np\nGROUP = 5\ndef group_codes(n):\n"
                "    rng = np.random.default_rng(1_000_003 * (n + 1))\n"
                "    return [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()"
                " for _ in range(GROUP)]\n")
    db = os.path.join(work, "busy.hmdb")
    hm.Index.open(db, create=True).close()
    writer, readers = run_readers_and_writer(db, CONCURRENCY_SECONDS, helpers)
    with hm.Index.open(db) as index:
        healthy = index.store.integrity_check() == []
    return {"seconds": CONCURRENCY_SECONDS, "writer_groups": writer["groups"],
            "reader_queries": sum(r["queries"] for r in readers),
            "reader_snapshots": sum(r["snapshots"] for r in readers),
            "reader_errors": sum(len(r["errors"]) for r in readers),
            "torn_reads": sum(len(r["torn"]) for r in readers), "healthy": healthy}


def main() -> None:
    figures = {}
    with tempfile.TemporaryDirectory() as work:
        print("fuzz corpus ...", flush=True)
        figures["corpus"] = fuzz_corpus(work)
        print("bombs ...", flush=True)
        figures["bombs"] = bombs(work)
        print("hostile decodes (small files that decode to GBs) ...", flush=True)
        figures["hostile"] = hostile_decodes.measure()
        print(f"coverage-guided fuzzing, {FUZZ_SECONDS} s ...", flush=True)
        figures["fuzz"] = coverage_guided(work)
        print(f"SIGKILL runs: {KILL_RUNS} ...", flush=True)
        ok, out = pytest_run("test_sigkill_during_add_files_loses_nothing_reported",
                             {"HASHMATCH_KILL_RUNS": str(KILL_RUNS)})
        figures["kills"] = {"runs": KILL_RUNS, "passed": ok, "output": out if not ok else ""}
        print(f"readers vs writer, {CONCURRENCY_SECONDS} s ...", flush=True)
        figures["concurrency"] = concurrency(work)
    print(json.dumps(figures, indent=1))
    write_results(figures)


def write_results(f: dict) -> None:
    c, b, z, k, q = f["corpus"], f["bombs"], f["fuzz"], f["kills"], f["concurrency"]
    command = ("HASHMATCH_LONG_FUZZ=1 " if LONG else "") + ".venv/bin/python benchmarks/reliability.py"
    crashes = c["crash"] + c["other"] + c["hang"] + len(z["failures"])
    lines = [
        "<!-- RELIABILITY:BEGIN -->",
        "## Reliability under bad input, faults and load (issue 7)",
        "",
        f"`{command}` on {platform.node()} ({os.cpu_count()} cores, "
        f"Python {platform.python_version()}), {time.strftime('%Y-%m-%d')}. "
        "Short versions of every check run in `make test` (tests/reliability/).",
        "",
        "| check | figure |",
        "|---|---|",
        f"| image corpus: files tried (truncations, bit flips, bombs, odd modes, EXIF, polyglots,"
        f" {len(SEEDS)} seeds x {MUTANTS_PER_SEED} mutants) | {c['inputs']} "
        f"({c['ok']} hashed, {c['error']} ImageError naming the file) |",
        f"| ... other exceptions / crashes / hangs (>30 s) | {c['other']} / {c['crash']} / "
        f"{c['hang']} |",
        f"| ... peak RSS of a worker over the corpus | {c['max_rss_mb']:.0f} MB |",
        f"| coverage-guided fuzzing ({z.get('engine')}, {FUZZ_SECONDS} s): inputs tried | "
        f"{z.get('inputs')} (failures: {len(z['failures'])}"
        + (f", {z['coverage_edges']} coverage edges" if z.get("coverage_edges") else "") + ") |",
        f"| 30000x30000 header-only bombs (PNG, GIF, JPEG SOF, BMP, TIFF): refused | "
        f"{b['refused']} of {b['files']} |",
        f"| ... peak RSS per bomb, fresh process (baseline after imports) | "
        f"{b['max_rss_mb']:.0f} MB ({b['baseline_rss_mb']:.0f} MB) |",
        *hostile_decodes.table_rows(f["hostile"]),
        f"| crashes in total | {crashes} |",
        f"| SIGKILL during `Index.add_files`: runs / items reported committed lost | "
        f"{k['runs']} / {'0' if k['passed'] else 'SEE OUTPUT (test failed)'} |",
        f"| 1 writer + 4 reader processes, {q['seconds']} s: reader queries / snapshots | "
        f"{q['reader_queries']} / {q['reader_snapshots']} |",
        f"| ... reader errors / torn reads / store healthy after | {q['reader_errors']} / "
        f"{q['torn_reads']} / {'yes' if q['healthy'] else 'NO'} |",
        "",
    ]
    if c["findings"] or z["failures"]:
        lines += ["Findings:", ""] + [f"- `{x}`" for x in (c["findings"] + z["failures"])[:20]]
        lines.append("")
    lines.append("<!-- RELIABILITY:END -->")
    block = "\n".join(lines)
    path = os.path.join(HERE, "RESULTS.md")
    text = open(path).read() if os.path.exists(path) else "# Results\n"
    pattern = re.compile(r"<!-- RELIABILITY:BEGIN -->.*?<!-- RELIABILITY:END -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as out:
        out.write(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
