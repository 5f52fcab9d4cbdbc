"""Samplers, losses, validation splits, the trainer's early stopping, lazy torch import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_fast.models.neural import samplers
from recsys_fast.models.neural.trainer import Validation, holdout_validation, last_item_validation


def _random_csr(rng, n_users=30, n_items=25, density=0.2):
    m = sp.random(n_users, n_items, density=density, format="csr", random_state=np.random.RandomState(1),
                  dtype=np.float32)
    m.data[:] = 1
    m.sort_indices()
    return m


def test_lazy_import_does_not_load_torch():
    modules = ["bprmf", "neumf", "lightgcn", "multvae", "sasrec", "gru4rec", "caser", "sequential", "base"]
    code = ("import sys, recsys_fast, recsys_fast.models.neural as n; "
            + "; ".join(f"import recsys_fast.models.neural.{m}" for m in modules)
            + "; n.BPRMF, n.SASRec; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_torch_names_the_extra(monkeypatch):
    from recsys_fast.errors import MissingExtraError
    from recsys_fast.models.neural import _torch

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError, match=r"recsys-fast\[train\]"):
        _torch.torch()


def test_negatives_avoid_positives_and_follow_popularity(rng):
    m = _random_csr(rng, density=0.5)
    for kind in ("uniform", "popularity"):
        s = samplers.PairSampler(m, n_negatives=4, negatives=kind)
        batches = list(s.epoch(np.random.default_rng(0), batch_size=64))
        users = np.concatenate([b[0] for b in batches])
        pos = np.concatenate([b[1] for b in batches])
        neg = np.concatenate([b[2] for b in batches])
        assert neg.shape == (m.nnz, 4)
        coo = m.tocoo()
        assert np.array_equal(np.sort(users * 1000 + pos), np.sort(coo.row * 1000 + coo.col))
        dense = m.toarray() > 0
        assert not dense[users[:, None], neg].any()
    # popularity sampling: a very popular item is drawn far more often than a rare one
    rows = sp.csr_matrix((np.ones(51, np.float32), np.r_[np.zeros(50, int), 1], np.r_[np.arange(50), 51, 51]),
                         shape=(51, 10))  # item 0 seen by users 0..49, item 1 by user 49; user 50 by nobody
    s = samplers.PairSampler(rows, 1, "popularity")
    draws = s.negatives(np.full(10000, 50), np.random.default_rng(0)).ravel()
    assert (draws == 0).sum() > 5 * (draws == 1).sum() > 0
    assert np.isin(draws, [0, 1]).all()  # zero-count items have zero weight
    # item 0 is user 3's own: redrawn up to 32 times (P(item 1) ~ 0.05 a draw), so ~81% end on item 1
    assert 0.7 < (s.negatives(np.full(2000, 3), np.random.default_rng(0)) == 1).mean() < 0.9


def test_user_sequences_order_by_time_and_pad_left():
    m = sp.csr_matrix((np.ones(5, np.float32), [0, 2, 3, 1, 4], [0, 3, 3, 5]), shape=(3, 6))
    ts = np.array([30, 10, 20, 5, 1])
    indptr, items = samplers.user_sequences(m, ts)
    assert items[indptr[0]:indptr[1]].tolist() == [2, 3, 0]
    assert items[indptr[2]:indptr[3]].tolist() == [4, 1]
    padded = samplers.pad_sequences(indptr, items, np.array([0, 1, 2]), max_len=2)
    assert padded.tolist() == [[4, 1], [0, 0], [5, 2]]  # ids +1, last two, left padding
    assert samplers.pad_sequences(indptr, items, np.array([0]), 4, drop_last=1).tolist() == [[0, 0, 3, 4]]


def test_normalized_adjacency_matches_dense_formula(rng):
    pytest.importorskip("torch")
    m = _random_csr(rng)
    m.data[m.indptr[3]:m.indptr[4]] = 0  # an empty user row
    m.eliminate_zeros()
    adj = samplers.normalized_adjacency(m).to_dense().numpy()
    r = m.toarray()
    a = np.block([[np.zeros((30, 30)), r], [r.T, np.zeros((25, 25))]])
    d = a.sum(1)
    with np.errstate(divide="ignore"):
        inv = np.where(d > 0, 1 / np.sqrt(d), 0)
    np.testing.assert_allclose(adj, inv[:, None] * a * inv[None, :], rtol=1e-6)


def test_losses_match_formulas():
    torch = pytest.importorskip("torch")
    from recsys_fast.models.neural import losses

    pos, neg = torch.tensor([1.0, -0.5]), torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    p, n = pos.numpy(), neg.numpy()
    assert np.isclose(losses.bpr(pos, neg).item(), -np.log(sig(p[:, None] - n)).mean(), rtol=1e-6)
    expected_bce = (-np.log(sig(p)) - np.log(1 - sig(n)).mean(1)).mean()
    assert np.isclose(losses.bce(pos, neg).item(), expected_bce, rtol=1e-6)
    logits = np.c_[p, n]
    expected_ce = (np.log(np.exp(logits).sum(1)) - p).mean()
    assert np.isclose(losses.sampled_softmax_ce(pos, neg).item(), expected_ce, rtol=1e-6)
    rows = torch.tensor([[1.0, 0.0, 1.0]])
    lg = torch.tensor([[0.2, 0.1, -0.3]])
    ls = lg.numpy() - np.log(np.exp(lg.numpy()).sum())
    assert np.isclose(losses.multinomial_nll(lg, rows).item(), -(ls * rows.numpy()).sum(), rtol=1e-6)
    mu, logvar = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.1, -0.2]])
    kl = -0.5 * (1 + logvar.numpy() - mu.numpy() ** 2 - np.exp(logvar.numpy())).sum()
    assert np.isclose(losses.gaussian_kl(mu, logvar).item(), kl, rtol=1e-6)
    assert losses.kl_weight(50, 100, 0.2) == 0.2 and losses.kl_weight(10, 100, 0.2) == pytest.approx(0.1)


def test_holdout_validation_keeps_a_train_item_per_user(rng):
    m = _random_csr(rng, density=0.3)
    before = m.copy()
    keep, val = holdout_validation(m, 0.25, np.random.default_rng(0))
    assert (m != before).nnz == 0 and m.nnz == before.nnz  # the input is untouched
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    for u in range(m.shape[0]):
        n = np.diff(m.indptr)[u]
        if n:
            assert keep[rows == u].sum() >= 1
            assert (~keep[rows == u]).sum() == min(round(n * 0.25), n - 1)
    assert val.targets.nnz == (~keep).sum()


def test_last_item_validation_holds_out_latest():
    m = sp.csr_matrix((np.ones(4, np.float32), [0, 1, 2, 3], [0, 3, 4]), shape=(2, 5))
    ts = np.array([5, 9, 1, 7])
    indptr, items = samplers.user_sequences(m, ts)
    keep, val = last_item_validation(m, indptr, items, np.random.default_rng(0))
    assert keep.tolist() == [True, False, True, True]  # user 0's latest is item 1; user 1 has one item
    assert val.users.tolist() == [0]


def test_validation_ndcg_textbook():
    v = Validation(np.array([0, 1]), sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], np.float32)),
                   sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 1, 0, 1]], np.float32)))
    scores = np.array([[9, 1, 2, 3], [4, 3, 2, 1]], np.float32)  # user 0: item 0 excluded
    got = v.ndcg(lambda users: scores[users], k=2)
    u0 = 0.0  # top-2 = items 3, 2 -> hit at rank 2
    u0 = (1 / np.log2(3)) / 1.0
    u1 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))  # top-2 = 0, 1 -> hit at rank 2 of 2 relevant
    assert got == pytest.approx((u0 + u1) / 2)


def test_validation_ndcg_caps_the_ideal_at_k_and_counts_users_without_targets_as_zero():
    # user 0: 3 held-out items, top-2 hits both -> NDCG@2 = 1 (IDCG over min(k, |T|) = 2 ranks);
    # user 1: no held-out items -> 0 in the mean
    v = Validation(np.array([0, 1]), sp.csr_matrix((2, 4), dtype=np.float32),
                   sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 0, 0, 0]], np.float32)))
    scores = np.array([[4, 3, 2, 1], [4, 3, 2, 1]], np.float32)
    assert v.ndcg(lambda users: scores[users], k=2) == pytest.approx(0.5)


def test_trainer_restores_best_epoch_and_stops():
    torch = pytest.importorskip("torch")
    from recsys_fast.models.neural.trainer import Trainer

    class Fake:
        """Validation is perfect only after epoch 2; the trainer must keep that epoch's weights."""

        def _train_batches(self, rng, epoch):
            yield epoch

        def _batch_loss(self, module, epoch, step):
            with torch.no_grad():
                module.weight.fill_(epoch + 1)
            return (module.weight * 0).sum() + 1.0

        def _validation_scores(self, module, users):
            good = module.weight.item() == 2
            return np.array([[1.0, 0.0] if good else [0.0, 1.0]], np.float32)

    module = torch.nn.Linear(1, 1, bias=False)
    val = Validation(np.array([0]), sp.csr_matrix((1, 2), dtype=np.float32),
                     sp.csr_matrix(np.array([[1, 0]], np.float32)))
    history = Trainer(epochs=10, learning_rate=0.1, patience=2).run(Fake(), module, np.random.default_rng(0), val)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert history[1]["val_ndcg@10"] == 1.0
    assert module.weight.item() == 2


def test_device_resolution():
    torch = pytest.importorskip("torch")
    from recsys_fast.models.neural._torch import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")


def test_sparse_embeddings_step_only_the_rows_of_the_batch():
    """NeuMF's tables are sparse: the trainer steps them with SparseAdam (rows looked up by the
    batch only) and the dense layers with Adam."""
    import torch

    from recsys_fast.models.neural.nets import NeuMFNet
    from recsys_fast.models.neural.trainer import Trainer

    torch.manual_seed(0)
    net = NeuMFNet(10, 8, 4, (8,))
    optimizers = Trainer(1, 0.01)._optimizers(net)
    assert [type(o).__name__ for o in optimizers] == ["Adam", "SparseAdam"]
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    net.pair_scores(torch.tensor([0, 1]), torch.tensor([2, 3])).sum().backward()
    for o in optimizers:
        o.step()
    for table in ("item_gmf", "item_mlp"):
        moved = (getattr(net, table).weight.detach() != before[f"{table}.weight"]).any(1)
        assert moved.tolist() == [i in (2, 3) for i in range(8)], table
    assert not torch.equal(net.out.weight.detach(), before["out.weight"])


def test_trainer_steps_invalidate_scoring_caches():
    """The dense parameters step with a fused Adam, which does not bump a tensor's ``_version``;
    the trainer bumps it, so a scoring cache keyed on it (``nets.scoring_cache``: LightGCN's
    propagated embeddings, NeuMF's item tower) is recomputed after every epoch's updates."""
    torch = pytest.importorskip("torch")
    from recsys_fast.models.neural.nets import scoring_cache
    from recsys_fast.models.neural.trainer import Trainer

    seen = []

    class Fake:
        def _train_batches(self, rng, epoch):
            yield epoch

        def _batch_loss(self, module, batch, step):
            return module(torch.ones(1, 1)).sum()

        def _validation_scores(self, module, users):
            cached = scoring_cache(module, "_cache_w", (module.weight,), lambda: module.weight.detach().clone())
            seen.append(cached.item())
            return np.array([[1.0, 0.0]], np.float32)

    module = torch.nn.Linear(1, 1, bias=False)
    optimizers = Trainer(1, 0.1)._optimizers(module)
    assert optimizers[0].defaults.get("fused")
    val = Validation(np.array([0]), sp.csr_matrix((1, 2), dtype=np.float32),
                     sp.csr_matrix(np.array([[1, 0]], np.float32)))
    Trainer(epochs=3, learning_rate=0.1, patience=None).run(Fake(), module, np.random.default_rng(0), val)
    assert len(set(seen)) == 3, seen
