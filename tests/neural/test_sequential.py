"""SASRec, GRU4Rec, Caser: they learn planted successor chains, are deterministic, round-trip
through bundles, and score new users from a given history in the given order."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from recsys_fast.models.neural import samplers  # noqa: E402
from recsys_fast.models.popularity import Popularity  # noqa: E402

from .conftest import (  # noqa: E402
    assert_learns_beyond_popularity, assert_same_recommendations, model_class, ndcg_at_10, saved_and_loaded,
)

SMALL = dict(n_threads=1, verbose=False, validation_fraction=0.0, embedding_size=16, batch_size=32)
FACTORIES = {
    "SASRec": lambda **kw: model_class("SASRec")(epochs=25, learning_rate=0.01, max_len=10, n_blocks=1, dropout=0.1,
                                         **SMALL, **kw),
    "GRU4Rec": lambda **kw: model_class("GRU4Rec")(epochs=25, learning_rate=0.01, max_len=10, hidden_size=32, dropout=0.1,
                                           **SMALL, **kw),
    "Caser": lambda **kw: model_class("Caser")(epochs=25, learning_rate=0.01, max_len=3, n_horizontal=4, n_vertical=2,
                                       dropout=0.1, **SMALL, **kw),
}


@pytest.fixture(scope="module")
def fitted(sequences):
    train, _ = sequences
    return {name: make(seed=5).fit(train) for name, make in FACTORIES.items()}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_learns_successor_chains(name, fitted, sequences):
    train, test = sequences
    assert_learns_beyond_popularity(fitted[name], train, test, margin=0.3)


@pytest.mark.parametrize("loss", ["sampled_ce", "bce"])
def test_sampled_losses_learn_successor_chains(loss, sequences):
    """The sampled losses (negatives shared by the batch for sampled_ce, per position for bce)
    also learn the chains, with far fewer negatives than items."""
    train, test = sequences
    model = FACTORIES["SASRec"](seed=5, loss=loss, n_negatives=8).fit(train)
    pop = ndcg_at_10(Popularity().fit(train), train, test)
    score = ndcg_at_10(model, train, test)
    assert score > pop + 0.3, (loss, score, pop)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_same_seed_same_scores(name, fitted, sequences):
    train, _ = sequences
    again = FACTORIES[name](seed=5).fit(train)
    assert_same_recommendations(fitted[name], again, train.user_map.ids[:25], k=10)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_save_load_round_trip(name, fitted, sequences, tmp_path):
    model = fitted[name]
    loaded = saved_and_loaded(model, tmp_path / "b")
    assert_same_recommendations(model, loaded, sequences[0].user_map.ids, k=7)


def _time_ordered(train, user_index):
    indptr, items = samplers.user_sequences(train.matrix, train.timestamps)
    return train.item_map.ids[items[indptr[user_index]:indptr[user_index + 1]]]


@pytest.mark.parametrize("name", ["SASRec", "GRU4Rec"])
def test_fitted_users_are_scored_from_their_time_ordered_history(name, fitted, sequences):
    train, _ = sequences
    model = fitted[name]
    for u in (0, 7):
        user = train.user_map.ids[u]
        hist = list(_time_ordered(train, u))
        known = model.recommend([user], k=10)
        new = model.recommend([10_000], k=10, history={10_000: hist})
        np.testing.assert_array_equal(known.items, new.items)
        np.testing.assert_allclose(known.scores, new.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_history_order_matters_for_new_users(name, fitted, sequences):
    train, test = sequences
    model = fitted[name]
    hist = list(_time_ordered(train, 3))
    recs = model.recommend([10_000], k=5, history={10_000: hist})
    assert not set(recs.items[0]) & set(hist)
    nxt = train.item_map.ids[test.matrix.indices[test.matrix.indptr[3]]]
    assert nxt in set(recs.items[0])  # the planted successor of the last item is found
    flipped = model.recommend([10_000], k=5, history={10_000: hist[::-1]})
    assert not np.array_equal(recs.scores, flipped.scores)


def test_sequential_hyper_parameters_are_checked():
    with pytest.raises(ValueError, match="loss"):
        model_class("SASRec")(loss="mse")
    with pytest.raises(ValueError, match="n_heads"):
        model_class("SASRec")(embedding_size=10, n_heads=3)
    with pytest.raises(ValueError, match="cell"):
        model_class("GRU4Rec")(cell="rnn")


@pytest.mark.parametrize("heads,blocks", [(1, 1), (1, 2), (2, 3), (4, 2)])
def test_sasrec_scoring_forward_equals_the_last_position_of_encode(heads, blocks):
    """SASRecNet.forward (last block for the last position only, attention written out) scores
    what the training encoder gives at the last position, padded and empty sequences included."""
    import torch

    from recsys_fast.models.neural.seqnets import SASRecNet

    torch.manual_seed(heads * 10 + blocks)
    net = SASRecNet(300, 16, 12, blocks, heads, 0.3).eval()
    seq = torch.randint(1, 301, (6, 12))
    seq[0, :7] = 0  # short history, left-padded
    seq[1] = 0  # nothing at all
    seq[2, :11] = 0  # one item
    with torch.no_grad():
        expected = net.encode(seq)[:, -1, :] @ net.item_weights().t()
        got = net(seq)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("net_name,kwargs", [("SASRecNet", dict(dim=8, max_len=10, n_blocks=2, n_heads=2, dropout=0.2)),
                                             ("GRU4RecNet", dict(dim=8, hidden=16, n_layers=1, dropout=0.2, cell="gru")),
                                             ("GRU4RecNet", dict(dim=8, hidden=16, n_layers=2, dropout=0.2, cell="lstm"))])
@pytest.mark.parametrize("dropped", [1, 4])
def test_encode_with_dropped_padding_columns_equals_the_full_window(net_name, kwargs, dropped):
    """Training drops a batch's leading all-padding columns (all but one): ``encode(seq[:, c:],
    dropped=c)`` gives the states that ``encode(seq)`` gives at those columns."""
    import torch

    from recsys_fast.models.neural import seqnets

    torch.manual_seed(dropped)
    net = getattr(seqnets, net_name)(12, **kwargs).eval()
    seq = torch.zeros(4, 10, dtype=torch.long)
    seq[0, 5:] = torch.tensor([3, 5, 1, 2, 7])
    seq[1, 7:] = torch.tensor([4, 4, 2])
    seq[2, 9] = 6
    seq[3, 6:] = torch.tensor([1, 2, 3, 12])
    with torch.no_grad():
        full = net.encode(seq)[:, dropped:]
        trimmed = net.encode(seq[:, dropped:], dropped=dropped)
    np.testing.assert_allclose(trimmed.numpy(), full.numpy(), rtol=1e-5, atol=1e-6)


def test_leading_padding_keeps_one_column():
    from recsys_fast.models.neural import samplers

    padded = np.array([[0, 0, 0, 4, 5], [0, 0, 1, 2, 3]])
    assert samplers.leading_padding(padded) == 1
    assert samplers.leading_padding(padded[:, 2:]) == 0
    assert samplers.leading_padding(np.zeros((2, 3), np.int64)) == 2


def test_caser_encode_equals_its_convolutions():
    """``CaserNet.encode`` (the convolutions as products) gives what the ``nn.Conv2d`` layers give."""
    import torch

    from recsys_fast.models.neural.seqnets import CaserNet

    torch.manual_seed(0)
    net = CaserNet(30, 50, 16, 5, 4, 3, 0.0).eval()
    seq, users = torch.randint(0, 51, (7, 5)), torch.randint(0, 31, (7,))
    e = net.item(seq).unsqueeze(1)
    hs = [torch.relu(conv(e).squeeze(3)).max(dim=2).values for conv in net.horizontal]
    z = torch.relu(net.fc(torch.cat([net.vertical(e).flatten(1)] + hs, dim=1)))
    reference = torch.cat([z, net.user(users)], dim=1)
    np.testing.assert_allclose(net.encode(seq, users).detach().numpy(), reference.detach().numpy(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("dropped", [0, 3])
def test_packed_batch_gives_every_position_its_padded_state(heads, dropped):
    """SASRec trains on batches packed by ``samplers.pack_sequences``: every real position's state
    (``encode_packed``) is the one ``encode`` gives it in its left-padded row of the full window,
    a full-length row (no padding) and a one-item row included; targets travel with their inputs."""
    import torch

    from recsys_fast.models.neural.seqnets import SASRecNet

    torch.manual_seed(heads)
    net = SASRecNet(12, 8, 10, 2, heads, 0.2).eval()
    seq = torch.zeros(5, 10, dtype=torch.long)
    seq[0, 5:] = torch.tensor([3, 5, 1, 2, 7])
    seq[1, 7:] = torch.tensor([4, 4, 2])
    seq[2, 9] = 6
    seq[3, 6:] = torch.tensor([1, 2, 3, 12])
    seq[4] = torch.arange(1, 11)
    if dropped:
        seq = seq[:4]  # the full-length row has no leading padding to drop
    labels = torch.arange(seq.numel()).reshape(seq.shape) + 1  # a distinct target per position
    inputs, targets, positions, mask, pad_slot, pad_count = samplers.pack_sequences(
        seq[:, dropped:].numpy(), labels[:, dropped:].numpy(), dropped)
    assert inputs.shape[1] == 11 and inputs.shape[0] < len(seq)
    with torch.no_grad():
        full = net.encode(seq)
        packed = net.encode_packed(*(torch.as_tensor(x) for x in (inputs, positions, mask, pad_slot, pad_count)))
    real = inputs > 0
    row = (targets[real] - 1) // seq.shape[1]  # each real slot's batch row
    np.testing.assert_array_equal(pad_count[real], 10 - (seq > 0).sum(1).numpy()[row])
    assert (inputs[np.arange(len(inputs))[:, None], pad_slot][real] == 0).all()  # the padding slot is padding
    np.testing.assert_array_equal(np.sort(targets[real]), np.sort(labels[seq > 0].numpy()))
    expected = full.reshape(-1, 8)[torch.as_tensor(targets[real] - 1)]
    np.testing.assert_allclose(packed[torch.as_tensor(real)].numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(inputs[real], seq.reshape(-1)[torch.as_tensor(targets[real] - 1)].numpy())
    net.train()  # the merged padding keys' dropout: finite states, padding slots zero
    states = net.encode_packed(*(torch.as_tensor(x) for x in (inputs, positions, mask, pad_slot, pad_count)))
    assert torch.isfinite(states).all()
