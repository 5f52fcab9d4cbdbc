"""ItemFeatures: a sparse item x feature matrix (CSR, float32) keyed by external item ids.

Built from a DataFrame with one row per item by ``ItemFeatures.from_pandas``. Each source column
becomes a *block* of features, named ``"<column>=<value>"``:

- ``text`` columns: words weighted by TF-IDF (``text_weighting="tfidf"``: scikit-learn's
  ``TfidfVectorizer`` with ``sublinear_tf=True``) or BM25 (``"bm25"``: scikit-learn's
  ``CountVectorizer`` counts, then ``kernels.weighting.bm25_weight`` with items as documents);
  tokenisation is scikit-learn's (lower-cased words of two or more letters or digits);
- ``categorical`` columns: one-hot, one feature per distinct value;
- ``multi_label`` columns (``{"genres": "|"}``): one feature per label of the ``sep``-joined
  value (genres, tags), weight 1 each.

Missing values (NaN/None/empty text) give an item no feature in that block. Every block's row is
scaled to unit L2 norm, then multiplied by its ``weights[column]`` (default 1), so that a column
with many words does not drown one with a single category under cosine similarity.

Items and interactions (the item map). ``ItemFeatures.item_map`` holds the featured items; the
items of an ``Interactions`` are its own ``item_map``. The two may differ both ways: items with
features but no interactions are *cold items* (content models rank them), and items with
interactions but no features can only be scored from interactions. ``report(interactions)`` counts
both; content models call it in ``fit``, keep it as ``fit_report_`` and warn
(``DataWarning``) when interactions name items without features, never dropping them silently.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from ..errors import DataError, DataWarning, MissingExtraError
from .idmap import IdMap, normalize_ids

TEXT_WEIGHTINGS = ("tfidf", "bm25")


class ItemFeatures:
    """``matrix`` (n_items x n_features CSR, float32, sorted indices), ``item_map`` (the featured
    items, sorted external ids: row i is item ``item_map.ids[i]``) and ``feature_names`` (str array,
    ``"<column>=<value>"``)."""

    def __init__(self, matrix: sp.csr_matrix, item_map: IdMap, feature_names: np.ndarray):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        matrix.sort_indices()
        feature_names = np.asarray(feature_names, dtype=str)
        if matrix.shape != (len(item_map), len(feature_names)):
            raise DataError(f"feature matrix shape {matrix.shape} does not match {len(item_map)} items and "
                            f"{len(feature_names)} feature names")
        self.matrix = matrix
        self.item_map = item_map
        self.feature_names = feature_names

    @property
    def n_items(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_features(self) -> int:
        return self.matrix.shape[1]

    def __repr__(self) -> str:
        return f"ItemFeatures({self.n_items} items x {self.n_features} features, {self.matrix.nnz} entries)"

    # ------------------------------------------------------------------ building
    @classmethod
    def from_pandas(cls, df, item: str = "item", text=(), categorical=(), multi_label=None, *,
                    text_weighting: str = "tfidf", weights: dict | None = None, min_df: int = 1,
                    max_features: int | None = None, source: str = "DataFrame") -> "ItemFeatures":
        """Build from one row per item; see the module docstring for the blocks.

        ``text``/``categorical``: column names; ``multi_label``: ``{column: separator}``;
        ``weights``: ``{column: block weight}``; ``min_df``/``max_features``: passed to the text
        vectorizer (per text column). Bad or missing columns, duplicated items and text columns
        without a single word raise ``DataError`` naming the column (and row).
        """
        from .. import validation

        text = [text] if isinstance(text, str) else list(text)
        categorical = [categorical] if isinstance(categorical, str) else list(categorical)
        multi_label = dict(multi_label or {})
        weights = dict(weights or {})
        validation.choice("text_weighting", text_weighting, TEXT_WEIGHTINGS)
        min_df = validation.integer("min_df", min_df, minimum=1)
        max_features = validation.integer("max_features", max_features, minimum=1, allow_none=True)
        columns = text + categorical + list(multi_label)
        if not columns:
            raise DataError("no feature columns: pass text=[...], categorical=[...] or multi_label={...}",
                            source=source)
        missing = [c for c in [item] + columns if c not in df.columns]
        if missing:
            raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", source=source)
        repeated = sorted({c for c in columns if columns.count(c) > 1} | ({item} & set(columns)))
        if repeated:
            raise DataError(f"column(s) {repeated} given in more than one role (item, text, categorical, "
                            "multi_label); use each column once", source=source)
        unknown_w = sorted(set(weights) - set(columns))
        if unknown_w:
            raise DataError(f"weights name column(s) {unknown_w} that are not feature columns {columns}",
                            source=source)
        for col, w in weights.items():
            validation.number(f"weights[{col!r}]", w, minimum=0.0)
        for col, sep in multi_label.items():
            if not isinstance(sep, str) or not sep:
                raise DataError(f"multi_label separator must be a non-empty string, got {sep!r}", source=source,
                                column=col)

        ids = normalize_ids(df[item].to_numpy(), "item", source, item)
        if len(ids) == 0:
            raise DataError("no items: the DataFrame is empty", source=source)
        item_map, rows = IdMap.from_values(ids, "item")
        if len(item_map) != len(ids):
            counts = np.bincount(rows, minlength=len(item_map))
            dup = int(np.flatnonzero(counts > 1)[0])
            at = np.flatnonzero(rows == dup)[:2]
            raise DataError(f"item {item_map.ids[dup].item()!r} has more than one row (rows {at[0]} and {at[1]}); "
                            "aggregate first, e.g. df.groupby(item)[col].agg('|'.join)", source=source, column=item)
        order = np.argsort(rows, kind="stable")  # rows in item-map order

        blocks, names = [], []
        for col in columns:
            values = df[col].iloc[order]
            if col in text:
                m, vocab = _text_block(values, col, text_weighting, min_df, max_features, source)
            elif col in categorical:
                m, vocab = _categorical_block(values, col)
            else:
                m, vocab = _multi_label_block(values, col, multi_label[col], source)
            m = _unit_rows(m) * float(weights.get(col, 1.0))
            blocks.append(sp.csr_matrix(m, dtype=np.float32))
            names.append(np.char.add(f"{col}=", np.asarray(vocab, dtype=str)))
        matrix = sp.hstack(blocks, format="csr", dtype=np.float32)
        matrix.eliminate_zeros()
        return cls(matrix, item_map, np.concatenate(names))

    # ------------------------------------------------------------------ alignment
    def report(self, interactions) -> dict:
        """How these features cover ``interactions``' items (an ``Interactions``): counts of
        ``items_with_interactions``, ``items_without_features`` (with up to 10 example ids in
        ``examples_without_features``) and the ``interactions_without_features`` they hold, and
        ``cold_items`` (featured items without interactions)."""
        imap = interactions.item_map
        has_events = np.bincount(interactions.matrix.indices, minlength=len(imap)) > 0
        featured = self.item_map.to_index(imap.ids, on_unknown="pad") >= 0 if len(imap) else np.zeros(0, bool)
        lacking = has_events & ~featured
        per_item = np.bincount(interactions.matrix.indices, minlength=len(imap))
        in_events = np.zeros(len(self.item_map), bool)
        if len(imap):
            idx = imap.to_index(self.item_map.ids, on_unknown="pad")
            in_events[idx >= 0] = has_events[idx[idx >= 0]]
        return {
            "items_with_interactions": int(has_events.sum()),
            "items_without_features": int(lacking.sum()),
            "interactions_without_features": int(per_item[lacking].sum()),
            "examples_without_features": imap.ids[lacking][:10].tolist(),
            "cold_items": int((~in_events).sum()),
        }

    def aligned(self, item_map: IdMap) -> sp.csr_matrix:
        """The feature rows in ``item_map``'s order (all-zero rows for items without features)."""
        if item_map == self.item_map:
            return self.matrix
        pos = self.item_map.to_index(item_map.ids, on_unknown="pad") if len(item_map) else np.zeros(0, np.int64)
        has = pos >= 0
        from .csr import gather_rows

        m = self.matrix
        picked = np.where(has, pos, 0)
        indptr, indices, data = gather_rows(m.indptr, m.indices, m.data, picked)
        lengths = np.where(has, np.diff(indptr), 0)
        keep = np.repeat(has, np.diff(indptr))
        new_ptr = np.zeros(len(item_map) + 1, dtype=np.int64)
        np.cumsum(lengths, out=new_ptr[1:])
        return sp.csr_matrix((data[keep], indices[keep], new_ptr), shape=(len(item_map), self.n_features))


TAG_SEPARATOR = "\x1f"  # joins an item's tags for multi_label: never inside a tag


def item_tags(tags, item: str = "item", tag: str = "tag", source: str = "tags"):
    """One row per item from tag events (e.g. ml-latest-small's ``tags.csv``: one row per user,
    item, tag): columns ``item`` and ``tags``, the item's distinct tags (stripped, lower-cased)
    joined by ``TAG_SEPARATOR``; pass ``multi_label={"tags": TAG_SEPARATOR}`` to
    ``ItemFeatures.from_pandas`` after merging it into the items' frame."""
    import pandas as pd

    missing = [c for c in (item, tag) if c not in tags.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(tags.columns)}", source=source)
    clean = tags[tag].astype(str).str.strip().str.lower()
    frame = pd.DataFrame({"item": tags[item].to_numpy(), "tag": clean.to_numpy()}).drop_duplicates()
    frame = frame[frame["tag"] != ""]
    return frame.groupby("item")["tag"].agg(TAG_SEPARATOR.join).rename("tags").reset_index()


def union_item_map(*maps: IdMap) -> IdMap:
    """The sorted union of item id maps (all integer or all string ids)."""
    kinds = {m.is_string for m in maps if len(m)}
    if len(kinds) > 1:
        raise DataError("item ids are integers in one source and strings in another; use one id type")
    return IdMap(np.unique(np.concatenate([m.ids for m in maps])), "item")


def warn_report(report: dict, what: str) -> None:
    """Warn (``DataWarning``) when interactions name items that have no features."""
    if report["items_without_features"]:
        warnings.warn(f"{what}: {report['items_without_features']} item(s) with "
                      f"{report['interactions_without_features']} interactions have no features "
                      f"(e.g. {report['examples_without_features'][:5]}); they are kept and scored from "
                      "interactions only", DataWarning, stacklevel=3)


# ---------------------------------------------------------------------- blocks
def _text_block(values, col, weighting, min_df, max_features, source):
    try:
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    except ImportError:  # pragma: no cover - the content extra is missing
        raise MissingExtraError("scikit-learn", "content") from None
    docs = values.to_numpy(dtype=object)
    bad = np.fromiter((not (v is None or isinstance(v, str) or (isinstance(v, float) and v != v)) for v in docs),
                      bool, len(docs))
    if bad.any():
        r = int(bad.argmax())
        raise DataError(f"text column holds {type(docs[r]).__name__} {docs[r]!r}; text columns must hold strings",
                        source=source, column=col)
    docs = ["" if not isinstance(v, str) else v for v in docs]
    if weighting == "tfidf":
        vec = TfidfVectorizer(min_df=min_df, max_features=max_features, sublinear_tf=True, dtype=np.float32)
    else:
        vec = CountVectorizer(min_df=min_df, max_features=max_features, dtype=np.float32)
    try:
        m = vec.fit_transform(docs).tocsr()
    except ValueError as exc:  # "empty vocabulary": no word in any row
        raise DataError(f"no words to index ({exc})", source=source, column=col) from None
    if weighting == "bm25":
        from ..kernels.weighting import bm25_weight

        m.sort_indices()
        m.data = bm25_weight(m.indptr, m.indices, m.data.astype(np.float32), m.shape[0], m.shape[1],
                             k1=1.2, b=0.75)
        m.data = np.maximum(m.data, 0)  # a word in every document has idf <= 0: no signal
    return m, vec.get_feature_names_out()


def _categorical_block(values, col):
    import pandas as pd

    codes, uniques = pd.factorize(values, sort=True)  # NaN/None -> -1 (no feature)
    rows = np.flatnonzero(codes >= 0)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, codes[rows])), shape=(len(values), len(uniques)))
    return m, [str(u) for u in uniques]


def _multi_label_block(values, col, sep, source):
    docs = values.to_numpy(dtype=object)
    rows, labels = [], []
    for r, v in enumerate(docs):
        if v is None or (isinstance(v, float) and v != v):
            continue
        if not isinstance(v, str):
            raise DataError(f"multi-label column holds {type(v).__name__} {v!r}; expected {sep!r}-joined strings",
                            source=source, row=r, column=col)
        for label in v.split(sep):
            label = label.strip()
            if label:
                rows.append(r)
                labels.append(label)
    vocab, codes = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (np.asarray(rows, np.int64), codes.reshape(-1))),
                      shape=(len(docs), len(vocab)))
    m.sum_duplicates()
    m.data[:] = 1.0  # a label repeated within one value counts once
    return m, vocab


def _unit_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float64)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    return sp.csr_matrix(sp.diags(scale) @ m)
