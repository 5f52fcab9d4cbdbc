"""Small planted-structure data for the neural model tests (tiny, so training takes seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_fast.data.interactions import Interactions


def planted_clusters(n_users=120, n_items=60, n_clusters=4, per_user=12, noise=1, seed=0) -> Interactions:
    """Users and items fall in clusters; a user picks ``per_user`` items of their cluster (plus a
    little noise), so item popularity alone carries no signal about a user's missing items."""
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % n_clusters
    users, items, times = [], [], []
    for u in range(n_users):
        c = u % n_clusters
        own = rng.choice(np.flatnonzero(item_cluster == c), per_user, replace=False)
        other = rng.choice(np.flatnonzero(item_cluster != c), noise, replace=False)
        chosen = np.concatenate([own, other])
        users += [f"u{u}"] * len(chosen)
        items += list(chosen)
        times += list(rng.permutation(len(chosen)))
    return Interactions.from_arrays(np.array(users), np.array(items, dtype=np.int64),
                                    timestamps=np.array(times, dtype=np.int64))


def planted_sequences(n_users=150, n_items=40, length=12, seed=0) -> Interactions:
    """Each user walks a fixed successor chain (item i -> perm[i]) from a random start, so the
    next item is predictable from the last one, while every item is about equally popular."""
    rng = np.random.default_rng(seed)
    succ = rng.permutation(n_items)
    users, items, times = [], [], []
    for u in range(n_users):
        cur = int(rng.integers(n_items))
        seen = set()
        t = 0
        while len(seen) < length:
            if cur not in seen:
                users.append(u)
                items.append(cur)
                times.append(t)
                seen.add(cur)
                t += 1
            cur = int(succ[cur])
            if cur in seen:  # chain closed into a cycle: jump somewhere new
                cur = int(rng.choice([i for i in range(n_items) if i not in seen]))
    return Interactions.from_arrays(np.array(users, dtype=np.int64), np.array(items, dtype=np.int64),
                                    timestamps=np.array(times, dtype=np.int64))


def split_holdout(data: Interactions, fraction=0.2, seed=1):
    from recsys_fast.models.neural.trainer import holdout_validation

    keep, _ = holdout_validation(data.matrix, fraction, np.random.default_rng(seed))
    return data.select(keep), data.select(~keep)


def split_last(data: Interactions):
    from recsys_fast.models.neural import samplers
    from recsys_fast.models.neural.trainer import last_item_validation

    indptr, seq = samplers.user_sequences(data.matrix, data.timestamps)
    keep, _ = last_item_validation(data.matrix, indptr, seq, np.random.default_rng(0))
    return data.select(keep), data.select(~keep)


def assert_same_recommendations(a, b, users, k: int) -> None:
    """Two models give identical top-k lists and scores for ``users``."""
    ra, rb = a.recommend(users, k=k), b.recommend(users, k=k)
    np.testing.assert_array_equal(ra.items, rb.items)
    np.testing.assert_array_equal(ra.scores, rb.scores)


def saved_and_loaded(model, path):
    """``model`` through a bundle at ``path`` and back, by the public loader."""
    from recsys_fast.models.registry import load

    return load(model.save(path))


def model_class(name: str):
    """A class of ``recsys_fast.models.neural``, imported when a factory first needs it."""
    from recsys_fast.models import neural

    return getattr(neural, name)


def assert_learns_beyond_popularity(model, train: Interactions, test: Interactions, margin: float) -> None:
    """The fitted model beats Popularity's NDCG@10 by ``margin`` and its training loss fell by a fifth."""
    from recsys_fast.models.popularity import Popularity

    pop = ndcg_at_10(Popularity().fit(train), train, test)
    score = ndcg_at_10(model, train, test)
    assert score > pop + margin, (type(model).__name__, score, pop)
    losses = [r["loss"] for r in model.training_log_]
    assert losses[-1] < 0.8 * losses[0]


def ndcg_at_10(model, train: Interactions, test: Interactions) -> float:
    """Mean NDCG@10 over test users, full ranking, training items excluded (textbook formula)."""
    users = np.flatnonzero(np.diff(test.matrix.indptr) > 0)
    recs = model.recommend(train.user_map.ids[users], k=10)
    item_idx = train.item_map.to_index(recs.items.ravel(), on_unknown="pad").reshape(recs.items.shape)
    total = 0.0
    for r, u in enumerate(users):
        relevant = set(test.matrix.indices[test.matrix.indptr[u]:test.matrix.indptr[u + 1]])
        dcg = sum(1 / np.log2(p + 2) for p, i in enumerate(item_idx[r]) if i in relevant)
        idcg = sum(1 / np.log2(p + 2) for p in range(min(10, len(relevant))))
        total += dcg / idcg
    return total / len(users)


@pytest.fixture(scope="module")
def clusters():
    return split_holdout(planted_clusters())


@pytest.fixture(scope="module")
def sequences():
    return split_last(planted_sequences())
