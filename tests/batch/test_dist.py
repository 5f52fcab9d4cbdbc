"""Dask: batch.score over two worker processes writes the rows local scoring writes, and the
ItemKNN/UserKNN graph built on the workers is the local graph. Each test starts and closes its
own LocalCluster(n_workers=2, processes=True, threads_per_worker=1)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

distributed = pytest.importorskip("distributed")

from recsys_fast import batch  # noqa: E402
from recsys_fast.errors import ParameterError  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                       silence_logs=40)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def test_cluster_scoring_writes_a_dataset_equal_to_local_scoring(client, ml_small, tmp_path):
    from recsys_fast.models.knn import ItemKNN

    model = ItemKNN(k=50).fit(ml_small)
    path = model.save(tmp_path / "bundle")
    local = batch.score(path, k=10, out=tmp_path / "local.parquet", chunk_users=100, progress=False)
    out = tmp_path / "recs.parquet"
    result = batch.score(path, k=10, out=out, chunk_users=100, client=client, progress=False)
    assert out.is_dir() and result.n_rows == local.n_rows == 6100
    parts = sorted(p.name for p in out.iterdir())
    assert parts == [f"chunk-{c:06d}.parquet" for c in range(7)]  # one part per chunk, no journal left
    workers = client.run(lambda: __import__("recsys_fast.batch.dist", fromlist=["_loaded"])._loaded.__len__())
    assert sorted(workers.values()) == [1, 1]  # each worker process loaded the bundle, once

    def loaded_threads():
        from recsys_fast.batch.dist import _loaded

        return [m.metadata["n_threads"] for m in _loaded.values()]

    # kernels on as many threads as the worker runs tasks, not on every core in every process
    assert sorted(client.run(loaded_threads).values()) == [[1], [1]]
    got = pq.read_table(out).sort_by([("user", "ascending"), ("rank", "ascending")])
    assert got.equals(pq.read_table(local.path))
    with pytest.raises(ParameterError, match="a bundle path when client= is given"):
        batch.score(model, out=tmp_path / "x.parquet", client=client)


@pytest.mark.parametrize("kind", ["ItemKNN", "UserKNN"])
def test_neighbour_graph_built_on_the_cluster_is_the_local_graph(kind, client, ml_small):
    from recsys_fast.models import knn

    cls = getattr(knn, kind)
    local = cls(k=40, shrink=5.0).fit(ml_small)
    remote = cls(k=40, shrink=5.0).fit(ml_small, client=client)
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(remote.graph_, name), getattr(local.graph_, name))
    users = ml_small.user_map.ids[:20]
    np.testing.assert_array_equal(remote.recommend(users, k=10).items, local.recommend(users, k=10).items)
