"""update() on the neural models: sequences take the new events at once (SASRec, GRU4Rec, Caser),
MF fold-in moves the touched users (BPRMF, LightGCN) toward what a refit learns, MultVAE reads the
new rows; new items are refused; bundles carry the update."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from recsys_fast.data.interactions import Interactions  # noqa: E402
from recsys_fast.errors import DataError  # noqa: E402
from recsys_fast.models import neural  # noqa: E402

from .conftest import ndcg_at_10, saved_and_loaded  # noqa: E402

SMALL = dict(n_threads=1, verbose=False, validation_fraction=0.0, embedding_size=16, batch_size=32, seed=3)


def _events(data: Interactions, user_col="user") -> pd.DataFrame:
    return data.to_pandas()


def _from(df: pd.DataFrame) -> Interactions:
    return Interactions.from_pandas(df, timestamp="timestamp")


@pytest.mark.parametrize("name", ["SASRec", "GRU4Rec", "Caser"])
def test_sequences_take_new_events_at_once(name, sequences, tmp_path):
    train, _ = sequences
    model = getattr(neural, name)(epochs=2, max_len=5, **SMALL).fit(train)
    df = _events(train)
    user = df["user"].iloc[0]
    own = df[df.user == user].sort_values("timestamp")
    again = own.iloc[[0]].assign(timestamp=10_000)  # an item met again moves to the end
    fresh = pd.DataFrame({"user": [10_001, 10_001], "item": [own.item.iloc[1], own.item.iloc[2]],
                          "weight": 1.0, "timestamp": [5, 6]})
    model.update(_from(pd.concat([again, fresh])))
    indptr, items = model.sequences()
    u = int(model.user_map_.to_index([user])[0])
    seq = model.item_map_.ids[items[indptr[u]:indptr[u + 1]]]
    np.testing.assert_array_equal(seq, np.r_[own.item.to_numpy()[1:], own.item.iloc[0]])
    v = int(model.user_map_.to_index([10_001])[0])
    np.testing.assert_array_equal(model.item_map_.ids[items[indptr[v]:indptr[v + 1]]], own.item.to_numpy()[1:3])
    # scoring a user now equals scoring the same sequence given as a history (Caser: a new user
    # has the "unknown user" embedding that history= uses; an old one keeps its own)
    cases = [(10_001, own.item.to_numpy()[1:3])] + ([(user, seq)] if name != "Caser" else [])
    for who, order in cases:
        a = model.recommend([who], k=5)
        b = model.recommend([who], k=5, history={who: list(order)})
        np.testing.assert_array_equal(a.items, b.items)
    loaded = saved_and_loaded(model, tmp_path / name)
    np.testing.assert_array_equal(loaded.recommend([10_001], k=5).items, model.recommend([10_001], k=5).items)


@pytest.mark.parametrize("name", ["BPRMF", "LightGCN"])
def test_fold_in_moves_touched_users_toward_a_refit(name, clusters):
    """Half of some users' events arrive late: after the fold-in their NDCG@10 on held-out items
    is close to a refit on everything (tolerance 0.1 here) and better than before the update;
    untouched users keep their vectors exactly."""
    train, test = clusters
    df = _events(train)
    rng = np.random.default_rng(0)
    late_users = rng.choice(df["user"].unique(), size=40, replace=False)
    late = df["user"].isin(late_users).to_numpy() & (rng.random(len(df)) < 0.7)
    make = lambda: getattr(neural, name)(epochs=30, learning_rate=0.02, **SMALL)  # noqa: E731
    model = make().fit(_from(df[~late]))
    before = model.module_.user.weight.detach().numpy().copy()
    early = _from(df[~late])
    sub_test, _ = test.remap(early.user_map, early.item_map)
    ndcg_before = ndcg_at_10(model, early, sub_test)
    model.update(_from(df[late]))
    full = _from(df)
    test_full, _ = test.remap(full.user_map, full.item_map)
    ndcg_after = ndcg_at_10(model, full, test_full)
    ndcg_refit = ndcg_at_10(make().fit(full), full, test_full)
    assert ndcg_after > ndcg_before
    assert ndcg_after >= ndcg_refit - 0.1
    untouched = ~np.isin(early.user_map.ids, late_users)
    after = model.module_.user.weight.detach().numpy()
    np.testing.assert_array_equal(after[untouched], before[untouched])


def test_new_items_are_refused_and_multvae_reads_new_rows(clusters):
    train, _ = clusters
    model = neural.MultVAE(epochs=2, **SMALL).fit(train)
    unknown = Interactions.from_arrays(np.array(["u1"]), np.array([10_000]), timestamps=np.array([1]))
    with pytest.raises(DataError, match="new item"):
        model.update(unknown)
    row = _events(train).iloc[[0]]
    newcomer = row.assign(user="newcomer")
    model.update(_from(newcomer))
    a = model.recommend(["newcomer"], k=5)
    b = model.recommend(["newcomer"], k=5, history={"newcomer": list(row.item)})
    np.testing.assert_array_equal(a.items, b.items)
    with pytest.raises(NotImplementedError, match="refit"):
        neural.NeuMF(epochs=1, **SMALL).fit(train).update(_from(newcomer))
