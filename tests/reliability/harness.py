"""Decode+hash files in a watched subprocess: crashes, hangs and memory are observed, not suffered.

The child (``python harness.py worker ALGOS``) reads one path per stdin line, announces
``{"start": i}``, hashes the file with each algorithm spec via ``hashmatch.hash_file`` and
prints one JSON line with, per spec, ``ok`` + hash, ``error`` (an ImageError: reason and
whether it named the file) or ``other`` (any other exception: the bug we hunt), and its peak
RSS so far (``ru_maxrss``). The parent enforces a per-file timeout, restarts the child after a
crash or hang and blames the file that was in flight.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
# (algorithm, exact): fast PDQ (JPEG draft path), exact PDQ (full-resolution RGB), fast phash
DEFAULT_SPECS = ("pdq:fast", "pdq:exact", "phash:fast", "regions:store", "regions:query")


@dataclass
class Outcome:
    path: str
    status: str  # "ok" | "error" | "other" | "crash" | "hang"
    detail: str = ""
    rss_mb: float = 0.0
    per_spec: list = field(default_factory=list)


def run_files(paths, specs=DEFAULT_SPECS, timeout=30.0, fresh_process_each=False,
              env=None) -> list[Outcome]:
    """Hash every path in a watched child; one Outcome per path, in order."""
    outcomes: list[Outcome] = []
    pending = list(paths)
    while pending:
        batch = pending[:1] if fresh_process_each else pending
        done = _run_child(batch, specs, timeout, env)
        outcomes.extend(done)
        pending = pending[len(done):]
    return outcomes


def _run_child(paths, specs, timeout, env) -> list[Outcome]:
    child_env = dict(os.environ, **(env or {}))
    child_env["PYTHONFAULTHANDLER"] = "1"
    # stderr to a file, not a pipe: Pillow's warnings would fill a pipe and stall the child.
    # The path list goes in a file too: written to a pipe it would deadlock against stdout.
    stderr_file = tempfile.TemporaryFile()
    list_file = tempfile.TemporaryFile()
    list_file.write("".join(p + "\n" for p in paths).encode())
    list_file.seek(0)
    child = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "harness.py"), "worker", ",".join(specs)],
        stdin=list_file, stdout=subprocess.PIPE, stderr=stderr_file, env=child_env,
    )
    list_file.close()
    outcomes: list[Outcome] = []
    buffer = b""
    in_flight, deadline = None, time.monotonic() + timeout + 30  # first deadline covers imports
    try:
        while len(outcomes) < len(paths):
            wait = deadline - time.monotonic()
            ready = select.select([child.stdout], [], [], max(0.0, wait))[0] if wait > 0 else []
            if not ready:
                blamed = paths[len(outcomes)]
                child.kill()
                outcomes.append(Outcome(blamed, "hang", f"no answer within {timeout:.0f} s"))
                return outcomes
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                child.wait(timeout=30)
                stderr_file.seek(0)
                stderr = stderr_file.read().decode(errors="replace")[-2000:]
                blamed = paths[len(outcomes)]
                outcomes.append(Outcome(blamed, "crash",
                                        f"exit {child.returncode}: {stderr.strip()}"))
                return outcomes
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                if "start" in message:
                    in_flight = message["start"]
                    deadline = time.monotonic() + timeout
                    continue
                assert message["i"] == len(outcomes) == in_flight
                outcomes.append(_outcome(paths[message["i"]], message))
        return outcomes
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
        stderr_file.close()


def _outcome(path, message) -> Outcome:
    statuses = [r["status"] for r in message["results"]]
    if "other" in statuses:
        status = "other"
        detail = next(r["detail"] for r in message["results"] if r["status"] == "other")
    elif all(s == "ok" for s in statuses):
        status, detail = "ok", ""
    elif all(s == "error" for s in statuses):
        status = "error"
        detail = message["results"][0]["detail"]
    else:
        # e.g. fast (draft) decode fine, exact decode of the broken full-resolution data not:
        # still only hashes and ImageErrors, which is the contract.
        status = "ok" if statuses.count("ok") else "error"
        detail = "mixed: " + "; ".join(f"{r['spec']}={r['status']}" for r in message["results"])
    return Outcome(path, status, detail, message["rss_kb"] / 1024, message["results"])


# -- the child ------------------------------------------------------------------------------
def peak_rss_kb() -> int:
    """This process's peak RSS. VmHWM where /proc has it: ru_maxrss survives execve on Linux,
    so a child of a big parent would report the parent's peak; VmHWM starts afresh."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _regions_result(spec: str, mode: str, path: str) -> dict:
    """What the Index does with a file: "store" = fingerprint_file with regions (never
    raises; an internal error is a failure of the contract), "query" = the query needles."""
    if mode == "store":
        from hashmatch.hashing import fingerprint_file

        result = fingerprint_file(path, ("pdq",), regions=True)
        if result.ok:
            return {"spec": spec, "status": "ok", "detail": f"{1 + len(result.regions)} rows"}
        internal = result.error.startswith("internal error")
        reason = result.error if internal else result.error.split(" (")[0]  # "reason (detail)"
        return {"spec": spec, "status": "other" if internal else "error", "detail": reason}
    from hashmatch.index import query_fingerprints

    needles, _ = query_fingerprints(path, ("pdq",), False, True, True)
    return {"spec": spec, "status": "ok", "detail": f"{len(needles)} needles"}


def _worker(specs: list[str]) -> None:
    import traceback

    import hashmatch as hm

    for i, line in enumerate(sys.stdin):
        path = line.rstrip("\n")
        print(json.dumps({"start": i}), flush=True)
        results = []
        for spec in specs:
            algorithm, mode = spec.split(":")
            try:
                if algorithm == "regions":
                    results.append(_regions_result(spec, mode, path))
                    continue
                fp = hm.hash_file(path, algorithm, exact=(mode == "exact"))
                results.append({"spec": spec, "status": "ok", "detail": fp.hex(),
                                "quality": fp.quality})
            except hm.ImageError as exc:
                named = exc.source == path and str(exc).startswith(path)
                results.append({"spec": spec, "status": "error" if named else "other",
                                "detail": exc.reason if named else
                                f"ImageError not naming the file: {exc!s}"})
            except BaseException as exc:  # noqa: BLE001 - exactly what we are looking for
                results.append({"spec": spec, "status": "other",
                                "detail": f"{type(exc).__name__}: {exc}\n"
                                          + traceback.format_exc(limit=6)})
        rss_kb = peak_rss_kb()
        print(json.dumps({"i": i, "results": results, "rss_kb": rss_kb}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker(sys.argv[2].split(","))
    elif sys.argv[1:2] == ["baseline"]:  # RSS of a worker that imported everything, hashed nothing
        import hashmatch  # noqa: F401
        import hashmatch.hashers.pdq  # noqa: F401

        print(peak_rss_kb())
