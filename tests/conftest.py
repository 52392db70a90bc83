import os
import sys
from pathlib import Path

import pytest

from pg_server import pg  # noqa: F401 - the real PostgreSQL server fixture, for every test

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
PDQ_REF = DATA / "pdq-reference"
CORPUS = DATA / "public-corpus"


def corpus_files():
    return sorted((CORPUS / "photos").glob("*.jpg")) + sorted((CORPUS / "receipts").glob("*.jpg"))


@pytest.fixture(scope="session", autouse=True)
def _shared_data_present():
    # The data sits beside the checkout (../shared/data); without it the oracle tests would
    # silently test nothing, so refuse to run.
    if not PDQ_REF.is_dir() or not CORPUS.is_dir():
        pytest.exit(f"shared test data not found at {DATA} (expected ../shared/data)", returncode=2)


def run_cli(*args, cwd=None, env=None, input=None):
    """Run `python -m hashmatch ...` as a user would, returning CompletedProcess."""
    import subprocess

    full_env = dict(os.environ)
    full_env.pop("HASHMATCH_DB", None)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "hashmatch", *map(str, args)], cwd=cwd,
                          env=full_env, input=input, capture_output=True, text=True, timeout=300)
