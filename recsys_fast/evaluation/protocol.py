"""Full-ranking evaluation of a fitted model on a test split, and tables comparing models.

Protocol: every item the model knows is a candidate, minus the user's items in ``train``. Test
data is aligned to the model's id maps: test users the model does not know are skipped, test
items it does not know are dropped, and both are counted. Users left with at least one test item
are evaluated; means are over them. Recommendations come from the model's internal batch path,
so evaluation costs what serving costs, without converting ids back and forth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import threads, validation
from ..progress import progress as progress_bar
from ..data.interactions import Interactions
from ..errors import DataError, ParameterError
from .metrics import RANKING_METRICS, check_ks, check_metrics, rating_errors

DEFAULT_BATCH_SIZE = 4096  # users per call to the model: bounds memory at batch x max(k) plus scoring


@dataclass
class EvaluationResult:
    """``means`` ("precision@10": value, ...; "rmse"/"mae" where they apply), ``per_user`` (a
    DataFrame: user, n_test, one column per metric@k) and ``protocol`` (what was evaluated and
    what was skipped, and why)."""

    means: dict
    per_user: object  # pandas.DataFrame (pandas is imported only when evaluating)
    protocol: dict
    k: tuple = field(default=())

    def to_dict(self, per_user: bool = False) -> dict:
        """Plain Python types for JSON; ``per_user=True`` adds the per-user table as records."""
        out = {"means": {m: _plain(v) for m, v in self.means.items()}, "k": list(self.k),
               "protocol": {m: _plain(v) for m, v in self.protocol.items()}}
        if per_user:
            out["per_user"] = [{c: _plain(v) for c, v in row.items()}
                               for row in self.per_user.to_dict(orient="records")]
        return out

    def table(self) -> str:
        """Metric rows x k columns (rating metrics, which have no k, in the first column)."""
        ks = list(self.k)
        names = []
        for key in self.means:
            name = key.split("@")[0]
            if name not in names:
                names.append(name)
        header = ["metric"] + [f"@{k}" for k in ks]
        rows = []
        for name in names:
            if name in self.means:  # no cutoff (rmse, mae)
                rows.append([name, _fmt(self.means[name])] + [""] * (len(ks) - 1))
            else:
                rows.append([name] + [_fmt(self.means.get(f"{name}@{k}")) for k in ks])
        return _render([header] + rows)

    def __str__(self) -> str:
        return "\n".join([self.table(), ""] + self.protocol_lines())

    def protocol_lines(self) -> list[str]:
        """What was evaluated and what was skipped, one line each."""
        p = self.protocol
        lines = [f"protocol: {p['ranking']}",
                 f"  users evaluated: {p['n_users_evaluated']} of {p['n_test_users']} test users "
                 f"(means over users with >= 1 test item)",
                 f"  users skipped, unknown to the model: {p['n_users_unknown']}",
                 f"  users skipped, no test item known to the model: {p['n_users_no_test_items']}",
                 f"  test interactions dropped, item unknown to the model: {p['n_test_items_dropped_unknown']}"
                 f" ({p['n_unknown_items']} distinct items)",
                 f"  test interactions also in train (excluded, so never hit): {p['n_test_items_in_train']}"]
        if p.get("n_train_interactions_ignored"):
            lines.append(f"  train interactions outside the model's id maps (not excluded): "
                         f"{p['n_train_interactions_ignored']}")
        if "n_cold_items" in p:
            lines.append(f"  cold items (in test, no train interaction): {p['n_cold_items']} with "
                         f"{p['n_cold_test_interactions']} test interactions of {p['n_cold_users']} users"
                         f" ({p['n_cold_items_unknown']} items unknown to the model, counted as misses)")
        if "n_rating_pairs" in p:
            lines.append(f"  rating pairs (rmse, mae): {p['n_rating_pairs']}")
        return lines


def evaluate(model, train: Interactions | None, test: Interactions, k=(10, 20), metrics=None,
             batch_size: int = DEFAULT_BATCH_SIZE, n_threads: int | None = None,
             progress: bool | None = None) -> EvaluationResult:
    """Evaluate a fitted ``model`` on ``test`` by full ranking, excluding each user's ``train`` items.

    ``k``: one cutoff or several. ``metrics``: names from precision, recall, f1, ndcg, map, mrr,
    hit_rate, coverage, cold_recall, rmse, mae (None: all that apply; rmse and mae need a model
    that ``predicts_ratings`` and test ratings; cold_recall needs ``train`` and is reported when
    test holds cold items, items without a train interaction, as ``cold_items`` splits make). ``train=None`` excludes nothing. ``n_threads`` bounds
    every thread pool for the call. ``progress``: None (default) shows progress of evaluations
    that run over a few seconds (a bar on a terminal, log lines otherwise; see
    ``recsys_fast.progress``), False never. No evaluable user (no test user known to the model with
    a known test item) is a ``DataError``. See the module docstring for the protocol.
    """
    from ..models.base import Recommender

    validation.instance("model", model, Recommender, "a recsys_fast Recommender")
    model.check_fitted()
    if train is not None:
        validation.instance("train", train, Interactions, "recsys_fast.Interactions or None")
    validation.instance("test", test, Interactions, "recsys_fast.Interactions")
    for name, data in (("train", train), ("test", test)):
        if data is None:
            continue
        for kind, ours, theirs in (("user", data.user_map, model.user_map_), ("item", data.item_map, model.item_map_)):
            if len(ours) and len(theirs) and ours.is_string != theirs.is_string:
                raise DataError(f"{name} {kind} ids are {_id_type(ours)} but the model's are {_id_type(theirs)}; "
                                f"build {name} with the same id type as the training data")
    ks = check_ks(k)
    explicit = metrics is not None
    wanted = check_metrics(metrics)
    batch_size = validation.integer("batch_size", batch_size, minimum=1)
    if progress is not None:
        progress = validation.boolean("progress", progress)
    n_threads = validation.integer("n_threads", n_threads, minimum=1, allow_none=True)
    rating_ok = model.predicts_ratings and test.ratings is not None
    if explicit and not rating_ok and any(m in wanted for m in ("rmse", "mae")):
        why = (f"{type(model).__name__} does not predict ratings" if not model.predicts_ratings
               else "test has no ratings (build it with a weight/rating column)")
        raise ParameterError("metrics", metrics, "metrics that apply", hint=f"rmse and mae cannot be computed: {why}")
    wanted = tuple(m for m in wanted if rating_ok or m not in ("rmse", "mae"))
    if explicit and train is None and "cold_recall" in wanted:
        raise ParameterError("metrics", metrics, "metrics that apply", hint="cold_recall needs train: cold items "
                             "are the test items without a train interaction")

    with threads.limit(n_threads):
        return _evaluate(model, train, test, ks, wanted, int(batch_size), progress)


def _evaluate(model, train, test, ks, wanted, batch_size, progress) -> EvaluationResult:
    import pandas as pd

    user_map, item_map = model.user_map_, model.item_map_
    n_items = len(item_map)

    # --- align test to the model, counting what cannot be evaluated
    test_rows = np.diff(test.matrix.indptr) > 0
    if user_map == test.user_map and item_map == test.item_map:
        aligned_test, known_u, known_i = test, np.ones(test.n_users, bool), np.ones(test.n_items, bool)
    else:
        known_u = user_map.to_index(test.user_map.ids, on_unknown="pad") >= 0 if test.n_users else np.zeros(0, bool)
        known_i = item_map.to_index(test.item_map.ids, on_unknown="pad") >= 0 if test.n_items else np.zeros(0, bool)
        aligned_test, _ = test.remap(user_map, item_map)
    nnz_user_known = known_u[test.row_of_nnz()]
    nnz_item_known = known_i[test.matrix.indices]
    dropped = nnz_user_known & ~nnz_item_known
    test_m = aligned_test.matrix
    n_test = np.diff(test_m.indptr)
    users = np.flatnonzero(n_test > 0).astype(np.int64)

    # --- align train (for exclusions only: pairs outside the model's maps cannot be recommended anyway)
    if train is None:
        excl = None
        n_train_ignored = 0
    else:
        aligned_train, info = train.remap(user_map, item_map)
        excl = aligned_train.matrix
        n_train_ignored = info["dropped"]
    overlap = 0 if excl is None else int(test_m.multiply(excl).count_nonzero())
    cold = _cold_targets(train, test, user_map, item_map, known_u) if "cold_recall" in wanted else None
    rows_all = users if cold is None else np.union1d(users, cold["users"])
    main_row = np.isin(rows_all, users)

    # --- recommend in batches, score each batch with the kernel
    kmax = int(ks[-1])
    values = np.empty((len(RANKING_METRICS), len(users), len(ks)), dtype=np.float64)
    covered = np.zeros((len(ks), n_items), dtype=bool)
    from ..kernels.metrics import per_user_metrics
    from ..data.csr import gather_rows

    cold_hits = np.zeros((0 if cold is None else len(cold["users"]), len(ks)), dtype=np.float64)
    if len(rows_all) == 0:
        raise DataError(_nothing_to_evaluate(test, test_rows, known_u, dropped))
    bar = progress_bar(len(rows_all), f"evaluating {type(model).__name__}", "users", enabled=progress)
    done = 0  # rows of ``users`` evaluated so far
    for start in range(0, len(rows_all), batch_size):
        rows_b = rows_all[start:start + batch_size]
        recs_b, _ = model.recommend_indices(rows_b, kmax, exclude=excl)
        recs_b = np.ascontiguousarray(recs_b, dtype=np.int32)
        if cold is not None:
            _count_cold_hits(recs_b, rows_b, cold, ks, n_items, cold_hits)
        main = main_row[start:start + batch_size]
        rows, recs = rows_b[main], np.ascontiguousarray(recs_b[main])
        t_indptr, t_indices, _ = gather_rows(test_m.indptr, test_m.indices, test_m.data, rows)
        values[:, done:done + len(rows), :] = per_user_metrics(recs, t_indptr, t_indices, ks)
        done += len(rows)
        for j, kk in enumerate(ks):
            top = recs[:, :kk]
            covered[j, top[top >= 0]] = True
        bar.update(len(rows_b))
    bar.close()

    # --- assemble
    means, columns = {}, {"user": user_map.ids[users], "n_test": n_test[users]}
    for m, name in enumerate(RANKING_METRICS):
        for j, kk in enumerate(ks):
            columns[f"{name}@{kk}"] = values[m, :, j]
    for name in wanted:
        for j, kk in enumerate(ks):
            if name in RANKING_METRICS:
                col = values[RANKING_METRICS.index(name), :, j]
                means[f"{name}@{kk}"] = float(col.mean()) if len(col) else float("nan")
            elif name == "coverage":
                means[f"coverage@{kk}"] = float(covered[j].sum()) / n_items if len(users) else float("nan")
            elif name == "cold_recall" and cold is not None and len(cold["users"]):
                means[f"cold_recall@{kk}"] = float(np.mean(cold_hits[:, j] / cold["count"]))
    protocol = {
        "ranking": f"full ranking over {n_items} items, "
                   + ("train items excluded" if train is not None else "nothing excluded"),
        "k": [int(x) for x in ks],
        "n_users_evaluated": len(users),
        "n_test_users": int(test_rows.sum()),
        "n_users_unknown": int((test_rows & ~known_u).sum()),
        "n_users_no_test_items": int((test_rows & known_u).sum()) - len(users),
        "n_test_items_dropped_unknown": int(dropped.sum()),
        "n_unknown_items": int(np.unique(test.matrix.indices[dropped]).size),
        "n_test_items_in_train": overlap,
        "n_train_interactions_ignored": int(n_train_ignored),
    }
    if cold is not None:
        protocol.update({"n_cold_items": cold["n_items"], "n_cold_test_interactions": int(cold["count"].sum()),
                         "n_cold_users": len(cold["users"]), "n_cold_items_unknown": cold["n_unknown"]})
    if "rmse" in wanted or "mae" in wanted:
        pairs_u = aligned_test.row_of_nnz()
        pred = model.predict_indices(pairs_u, test_m.indices)
        errs = rating_errors(pred, aligned_test.ratings)
        for name in ("rmse", "mae"):
            if name in wanted:
                means[name] = errs[name]
        protocol["n_rating_pairs"] = int(aligned_test.nnz)
    per_user = pd.DataFrame({c: v for c, v in columns.items()
                             if c in ("user", "n_test") or c.split("@")[0] in wanted})
    return EvaluationResult(means=means, per_user=per_user, protocol=protocol, k=tuple(int(x) for x in ks))


def _nothing_to_evaluate(test, test_rows, known_u, dropped) -> str:
    """Why no user can be evaluated, in words."""
    if test.nnz == 0:
        return "no users to evaluate: the test split is empty (check the split's parameters)"
    n_test_users = int(test_rows.sum())
    n_unknown = int((test_rows & ~known_u).sum())
    return (f"no users to evaluate: of the {n_test_users} test users, {n_unknown} are unknown to the model and the "
            f"other {n_test_users - n_unknown} have no test item the model knows ({int(dropped.sum())} test "
            "interactions with unknown items); train and test must share users and items, as the splits of "
            "recsys_fast.split make them")


def _cold_targets(train, test, user_map, item_map, known_u) -> dict | None:
    """Test interactions with cold items (no interaction in ``train``) of users the model knows:
    per evaluated user (model index, sorted) their count, and the sorted keys ``user * n_items +
    item`` of those the model can rank. None without train or without cold test interactions."""
    if train is None or test.nnz == 0:
        return None
    in_train = train.item_map.to_index(test.item_map.ids, on_unknown="pad") if test.n_items else np.zeros(0, np.int64)
    train_count = np.bincount(train.matrix.indices, minlength=train.n_items)
    is_cold = (in_train < 0) | (train_count[np.maximum(in_train, 0)] == 0)
    nnz_cold = is_cold[test.matrix.indices] & known_u[test.row_of_nnz()]
    if not nnz_cold.any():
        return None
    u = user_map.to_index(test.user_map.ids[test.row_of_nnz()[nnz_cold]])
    i = item_map.to_index(test.item_map.ids[test.matrix.indices[nnz_cold]], on_unknown="pad")
    count = np.bincount(u, minlength=len(user_map))
    users = np.flatnonzero(count > 0).astype(np.int64)
    n_items = len(item_map)
    cold_test_items = np.unique(test.matrix.indices[nnz_cold])
    return {"users": users, "count": count[users].astype(np.float64),
            "keys": np.unique(u[i >= 0] * n_items + i[i >= 0]),
            "n_items": int(len(cold_test_items)),
            "n_unknown": int((item_map.to_index(test.item_map.ids[cold_test_items], on_unknown="pad") < 0).sum())}


def _count_cold_hits(recs, rows, cold, ks, n_items, out) -> None:
    """Add, per cold user among ``rows`` and cutoff, the cold test items in its top-k to ``out``."""
    pos = np.searchsorted(cold["users"], rows)
    pos_c = np.minimum(pos, len(cold["users"]) - 1)
    is_cold_user = cold["users"][pos_c] == rows
    if not is_cold_user.any():
        return
    keys = rows[is_cold_user, None] * n_items + recs[is_cold_user].astype(np.int64)
    at = np.minimum(np.searchsorted(cold["keys"], keys), max(len(cold["keys"]) - 1, 0))
    hit = (recs[is_cold_user] >= 0) & (cold["keys"][at] == keys) if len(cold["keys"]) else np.zeros(keys.shape, bool)
    cum = np.cumsum(hit, axis=1)
    for j, kk in enumerate(ks):
        out[pos_c[is_cold_user], j] += cum[:, min(int(kk), recs.shape[1]) - 1]


def compare(results: dict, columns=None) -> str:
    """A text table with one row per model (the keys of ``results``) and one column per metric@k.

    ``columns`` picks and orders the metric keys (default: every key of the first result).
    A note is added when the results were not computed on the same protocol.
    """
    if not results:
        raise ParameterError("results", results, "a non-empty {model name: EvaluationResult}")
    for name, res in results.items():
        validation.instance(f"results[{name!r}]", res, EvaluationResult, "an EvaluationResult")
    first = next(iter(results.values()))
    keys = list(columns) if columns is not None else list(first.means)
    table = [["model"] + keys]
    for name, res in results.items():
        table.append([str(name)] + [_fmt(res.means.get(key)) for key in keys])
    text = _render(table)
    same = {(r.protocol["n_users_evaluated"], r.protocol["ranking"]) for r in results.values()}
    if len(same) > 1:
        text += "\nnote: the results were computed on different protocols (users evaluated or catalogue differ)"
    return text


def _id_type(m) -> str:
    return "strings" if m.is_string else "integers"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if value != value:
        return "nan"
    return f"{value:.4f}"


def _render(rows: list[list[str]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
