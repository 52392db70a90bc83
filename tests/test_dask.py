"""Dask bulk hashing on a real LocalCluster (2 worker processes): same results as local."""

import shutil
from dataclasses import dataclass

import pytest

from hashmatch.distributed import dask_map_files
from hashmatch.hashing import _FingerprintJob, fingerprint_file, hash_files, iter_hash_files
from hashmatch.index import Index

from conftest import corpus_files, run_cli

import distributed  # noqa: E402 - a test dependency: a missing dask must fail, not skip

FILES = corpus_files()[::12]  # 40 of the 480 public-corpus files, photos and receipts


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def summary(result):
    return (result.path, result.sha256, result.file_size, result.format, result.width,
            result.height, result.error,
            [(fp.algorithm, fp.hex(), fp.quality) for fp in result.fingerprints])


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not an image at all")
    monkeypatch.chdir(tmp_path)  # a relative path must mean the same file on the workers
    shutil.copy(FILES[0], tmp_path / "relative.jpg")
    return [*map(str, FILES[:20]), str(bad), str(tmp_path / "missing.jpg"), "relative.jpg",
            *map(str, FILES[20:])]


def test_dask_fingerprints_equal_the_local_path(client, inputs):
    assert len(client.nthreads()) == 2
    local = hash_files(inputs, workers=1)
    remote = hash_files(inputs, client=client)
    assert [summary(r) for r in remote] == [summary(r) for r in local]
    assert remote[20].error.startswith("not an image") and "not found" in remote[21].error
    assert remote[22].path == "relative.jpg" and remote[22].sha256 == remote[0].sha256
    assert sum(r.ok for r in remote) == len(FILES) + 1


def test_several_algorithms_stream_in_order_in_small_batches(client, inputs):
    algorithms = ("pdq", "phash", "dhash")
    local = list(iter_hash_files(inputs, algorithms, workers=1))
    job = _FingerprintJob(algorithms, False, True)
    seen = []
    for result in dask_map_files(job, inputs, client, batch_size=3, max_in_flight=2):
        seen.append(summary(result))
    assert seen == [summary(r) for r in local]
    progress = []
    list(iter_hash_files(inputs[:7], algorithms, client=client, progress=progress.append))
    assert progress == list(range(1, 8))


@dataclass(frozen=True)
class _FailOnReceipts:
    """A job whose task blows up (not a per-file error) when its batch holds a receipt."""

    def __call__(self, path):
        if "receipts" in str(path):
            raise RuntimeError("worker-side failure")
        return fingerprint_file(path)


def test_a_failed_task_becomes_per_file_errors_and_the_run_goes_on(client):
    paths = [str(p) for p in FILES]
    results = list(dask_map_files(_FailOnReceipts(), paths, client, batch_size=1))
    assert [r.path for r in results] == paths
    for path, result in zip(paths, results):
        if "receipts" in path:
            assert "dask task failed (RuntimeError: worker-side failure)" in result.error
        else:
            assert result.ok and result.fingerprints


def test_index_add_files_on_dask_stores_the_same_codes(client, tmp_path):
    with Index.open(tmp_path / "local.hmdb", create=True) as local, \
            Index.open(tmp_path / "dask.hmdb", create=True) as remote:
        a = local.add_files(FILES, workers=1)
        b = remote.add_files(FILES, client=client)
        assert [(o.path, o.status) for o in a.outcomes] == [(o.path, o.status) for o in b.outcomes]
        x, y = local.store.load_codes("pdq", 256), remote.store.load_codes("pdq", 256)
        assert (x.codes == y.codes).all() and (x.qualities == y.qualities).all()


def test_cli_index_with_a_scheduler_address_and_with_a_local_cluster(client, tmp_path):
    files = [str(p) for p in FILES[:6]]
    address = client.scheduler.address
    done = run_cli("index", "--db", tmp_path / "a.hmdb", "--dask", address, "-q", *files)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("added 6, duplicates 0, skipped 0, failed 0")
    done = run_cli("index", "--db", tmp_path / "b.hmdb", "--dask", "local", "-q", *files[:3],
                   tmp_path / "a.hmdb")  # a non-image among them
    assert done.returncode == 2
    assert "added 3, duplicates 0, skipped 0, failed 1" in done.stdout
    assert "a.hmdb" in done.stderr
