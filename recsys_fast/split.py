"""Train/test splits of ``Interactions``: per-user random holdout, leave-last-out, temporal, user folds,
cold items.

Every split returns ``Interactions`` that share the input's id maps (built with
``Interactions.select``), so train and test index the same users and items; weights, ratings and
timestamps stay aligned. Train and test are disjoint and together are exactly the input.
Randomness comes from ``numpy.random.default_rng(seed)`` (PCG64) drawn over the interactions in
their internal order (users, then items, by sorted external id), so a split depends only on the
data and the seed, not on input row order, thread count or platform.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timezone

import numpy as np

from . import validation
from .errors import DataError, ParameterError
from .data.interactions import Interactions


def holdout(data: Interactions, test_fraction: float = 0.2, seed: int = 42) -> tuple[Interactions, Interactions]:
    """Per-user random holdout: each user puts ``n_test(n)`` of its ``n`` interactions in test.

    ``n_test(n) = min(n - 1, max(1, floor(n * test_fraction + 0.5)))`` for ``n >= 2`` (round half
    up, at least one test and one train interaction), and 0 for users with a single interaction,
    who stay wholly in train. Which interactions go to test is uniformly random per user.
    """
    _check_data(data)
    test_fraction = validation.fraction("test_fraction", test_fraction)
    test = _per_user_holdout(data, test_fraction, np.random.default_rng(_check_seed(seed)))
    return data.select(~test), data.select(test)


def leave_last_out(data: Interactions, n: int = 1) -> tuple[Interactions, Interactions]:
    """Each user's ``n`` latest interactions (by timestamp) go to test.

    Equal timestamps are ordered by item (internal index, i.e. sorted external id): of two items
    rated in the same second, the larger id counts as later. Users with ``n`` or fewer
    interactions stay wholly in train. Needs timestamps.
    """
    _check_data(data)
    n = validation.integer("n", n, minimum=1)
    ts = _require_timestamps(data, "leave_last_out")
    rows = data.row_of_nnz()
    order = _order_by_user_then_time(rows, ts)  # per user, oldest first; ties by item index
    counts = np.diff(data.matrix.indptr)
    rank = np.arange(data.nnz) - data.matrix.indptr[rows[order]]  # 0 = oldest of its user
    r_counts = counts[rows[order]]
    test = np.zeros(data.nnz, dtype=bool)
    test[order] = (r_counts > n) & (rank >= r_counts - n)
    return data.select(~test), data.select(test)


def temporal(data: Interactions, cutoff) -> tuple[Interactions, Interactions]:
    """Global time split: timestamps before ``cutoff`` go to train, at or after it to test.

    ``cutoff`` is a timestamp in the data's units (Unix seconds for data read from MovieLens or
    datetime columns), a ``datetime``/``date``/``numpy.datetime64``/``pandas.Timestamp`` or an ISO
    8601 string (naive values are taken as UTC, converted to Unix seconds), or a ``float``
    strictly between 0 and 1: the fraction of interactions wanted in train. A fraction ``q``
    sets the cutoff to the timestamp at position ``floor(q * nnz)`` of the sorted timestamps, so
    train holds about ``q`` of the data (less when many events share the cutoff second).
    Users and items may appear only in test; evaluation counts and skips them.
    """
    _check_data(data)
    ts = _require_timestamps(data, "temporal")
    value = _cutoff_value(cutoff, ts)
    test = ts >= value
    return data.select(~test), data.select(test)


def user_folds(data: Interactions, n_folds: int = 5, seed: int = 42,
               test_fraction: float = 0.2) -> list[tuple[Interactions, Interactions]]:
    """K-fold cross-validation over users: a list of ``n_folds`` ``(train, test)`` pairs.

    Users with at least two interactions are shuffled and dealt round-robin into ``n_folds``
    folds (fold sizes differ by at most one). In fold ``k`` each of its users holds out
    ``n_test(n)`` interactions exactly as ``holdout(test_fraction)`` does; train is everything
    else (all interactions of the other users plus the rest of fold ``k``'s). Every eligible user
    is tested in exactly one fold; users with one interaction are in every train.
    """
    _check_data(data)
    test_fraction = validation.fraction("test_fraction", test_fraction)
    n_folds = validation.integer("n_folds", n_folds, minimum=2)
    rng = np.random.default_rng(_check_seed(seed))
    counts = np.diff(data.matrix.indptr)
    eligible = np.flatnonzero(counts >= 2)
    if len(eligible) < n_folds:
        raise DataError(f"only {len(eligible)} users have 2 or more interactions; "
                        f"cannot make {n_folds} folds")
    fold_of_user = np.full(data.n_users, -1, dtype=np.int64)
    fold_of_user[rng.permutation(eligible)] = np.arange(len(eligible)) % n_folds
    held = _per_user_holdout(data, test_fraction, rng)
    fold_of_nnz = fold_of_user[data.row_of_nnz()]
    out = []
    for k in range(n_folds):
        test = held & (fold_of_nnz == k)
        out.append((data.select(~test), data.select(test)))
    return out


def cold_items(data: Interactions, fraction: float = 0.1, seed: int = 42) -> tuple[Interactions, Interactions]:
    """Cold-start split over items: a random ``fraction`` of the items with interactions become
    cold, and all their interactions go to test; every other interaction stays in train.

    ``round(fraction * n)`` items (at least 1, at most n - 1) of the n items with interactions are
    drawn uniformly without replacement. Train keeps the full id maps, so cold items are in
    ``train.item_map`` with empty columns; users whose every interaction is cold have empty train
    rows. ``evaluate`` reports ``cold_recall@k`` over the test items that have no train
    interaction; a model that learns only from interactions cannot rank them above the rest.
    """
    _check_data(data)
    fraction = validation.fraction("fraction", fraction)
    counts = np.bincount(data.matrix.indices, minlength=data.n_items)
    active = np.flatnonzero(counts > 0)
    if len(active) < 2:
        raise DataError(f"only {len(active)} item(s) have interactions; cold_items needs at least 2")
    n_cold = min(len(active) - 1, max(1, int(math.floor(fraction * len(active) + 0.5))))
    cold = np.zeros(data.n_items, dtype=bool)
    cold[np.random.default_rng(_check_seed(seed)).choice(active, size=n_cold, replace=False)] = True
    test = cold[data.matrix.indices]
    return data.select(~test), data.select(test)


# ---------------------------------------------------------------------- helpers
def test_counts(counts: np.ndarray, test_fraction: float) -> np.ndarray:
    """The per-user number of test interactions ``holdout`` takes from users with ``counts``."""
    counts = np.asarray(counts, dtype=np.int64)
    n_test = np.floor(counts * float(test_fraction) + 0.5).astype(np.int64)
    n_test = np.minimum(counts - 1, np.maximum(1, n_test))
    return np.where(counts >= 2, n_test, 0)


test_counts.__test__ = False  # not a pytest test despite the name


def _per_user_holdout(data: Interactions, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Mask over ``matrix.data``: a uniformly random ``test_counts`` subset of each user's row."""
    indptr = data.matrix.indptr
    rows = data.row_of_nnz().astype(np.int64)
    # One 32-bit random key per interaction below the row index: one stable sort ranks each
    # user's interactions in random order (ties, rare, fall back to item order).
    keys = (rows << 32) | rng.integers(0, 2**32, size=data.nnz, dtype=np.uint64).astype(np.int64)
    order = np.argsort(keys, kind="stable")
    rank = np.arange(data.nnz) - indptr[rows[order]]
    n_test = test_counts(np.diff(indptr), test_fraction)
    test = np.zeros(data.nnz, dtype=bool)
    test[order] = rank < n_test[rows[order]]
    return test


def _order_by_user_then_time(rows: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Permutation of the interactions sorted by (user, timestamp, item index).

    Interactions are stored by (user, item index), so a stable sort on (user, timestamp) keeps
    item order among equal timestamps. Packing both into one int64 makes it a single sort.
    """
    if len(ts) == 0:
        return np.zeros(0, dtype=np.int64)
    t0, span = int(ts.min()), int(ts.max()) - int(ts.min())
    if span < 2**32 and len(rows) and int(rows.max()) < 2**31:
        key = (rows.astype(np.int64) << 32) | (ts - t0)
        return np.argsort(key, kind="stable")
    return np.lexsort((np.arange(len(ts)), ts, rows))


def _check_data(data) -> None:
    validation.instance("data", data, Interactions, "recsys_fast.Interactions")


def _check_seed(seed) -> int | None:
    return validation.integer("seed", seed, minimum=0, allow_none=True)


CUTOFF_ALLOWED = ("a timestamp, a datetime, an ISO 8601 date/time (e.g. '2018-01-01' or "
                  "'2018-01-01T12:00:00+00:00') or a fraction strictly between 0 and 1")


def _require_timestamps(data: Interactions, what: str) -> np.ndarray:
    if data.timestamps is None:
        raise DataError(f"{what} needs timestamps, but these interactions have none; build them "
                        "with timestamp= (or use holdout)")
    return data.timestamps


def _cutoff_value(cutoff, ts: np.ndarray) -> int | float:
    """A cutoff in the units of ``ts`` (see ``temporal``)."""
    if isinstance(cutoff, (float, np.floating)) and 0.0 < float(cutoff) < 1.0:
        pos = min(len(ts) - 1, int(math.floor(float(cutoff) * len(ts))))
        return int(np.partition(ts, pos)[pos]) if len(ts) else 0
    if isinstance(cutoff, (bool, np.bool_)):
        raise ParameterError("cutoff", cutoff, CUTOFF_ALLOWED)
    if isinstance(cutoff, (int, np.integer)):
        return int(cutoff)
    if isinstance(cutoff, (float, np.floating)):
        if not math.isfinite(cutoff):
            raise ParameterError("cutoff", cutoff, CUTOFF_ALLOWED)
        return float(cutoff)
    if isinstance(cutoff, str):
        try:
            cutoff = datetime.fromisoformat(cutoff.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ParameterError("cutoff", cutoff, CUTOFF_ALLOWED) from None
    if isinstance(cutoff, np.datetime64):
        if np.isnat(cutoff):
            raise ParameterError("cutoff", cutoff, CUTOFF_ALLOWED)
        return int(cutoff.astype("datetime64[s]").astype(np.int64))
    if isinstance(cutoff, datetime):  # includes pandas.Timestamp
        if cutoff.tzinfo is None:
            cutoff = cutoff.replace(tzinfo=timezone.utc)
        return cutoff.timestamp()
    if isinstance(cutoff, date):
        return int(datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=timezone.utc).timestamp())
    raise ParameterError("cutoff", validation.type_of(cutoff), CUTOFF_ALLOWED)

