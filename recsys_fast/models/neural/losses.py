"""Training losses shared by the neural models (torch tensors in, scalar tensor out)."""

from __future__ import annotations

from ._torch import torch


def bpr(pos, neg):
    """Bayesian personalised ranking: -log sigmoid(pos - neg), mean over pairs.

    ``pos`` has shape (b,), ``neg`` (b,) or (b, n_neg) (each negative paired with the positive).
    """
    F = torch().nn.functional
    if neg.dim() == pos.dim() + 1:
        pos = pos.unsqueeze(-1)
    return -F.logsigmoid(pos - neg).mean()


def bce(pos, neg):
    """Binary cross-entropy with sampled negatives: positives labelled 1, negatives 0.

    The negative term is averaged over the negatives of each positive, so the two sides weigh
    the same whatever ``n_negatives`` is.
    """
    F = torch().nn.functional
    pos_term = -F.logsigmoid(pos)
    neg_term = -F.logsigmoid(-neg)
    if neg.dim() == pos.dim() + 1:
        neg_term = neg_term.mean(-1)
    return (pos_term + neg_term).mean()


def softmax_ce(logits, target):
    """Full softmax cross-entropy over all items: ``logits`` (b, n_items), ``target`` (b,)."""
    return torch().nn.functional.cross_entropy(logits, target)


def sampled_softmax_ce(pos, neg):
    """Softmax cross-entropy over the positive and its sampled negatives (positive at column 0)."""
    t = torch()
    logits = t.cat([pos.unsqueeze(-1), neg], dim=-1)
    return t.nn.functional.cross_entropy(logits, t.zeros(len(logits), dtype=t.long, device=logits.device))


def multinomial_nll(logits, rows):
    """Multinomial log-likelihood of the user's item row (Mult-VAE), negated and averaged over users."""
    log_softmax = torch().nn.functional.log_softmax(logits, dim=-1)
    return -(log_softmax * rows).sum(-1).mean()


def multinomial_nll_sparse(logits, rows, items):
    """``multinomial_nll`` of binary rows given by their nonzeros (row index, item): the
    log-softmax gathered at the nonzeros instead of multiplied by a dense row."""
    log_softmax = torch().nn.functional.log_softmax(logits, dim=-1)
    return -log_softmax[rows, items].sum() / logits.shape[0]


def gaussian_kl(mu, logvar):
    """KL(N(mu, sigma^2) || N(0, I)) per user, averaged."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)).mean()


def kl_weight(step: int, total_anneal_steps: int, anneal_cap: float) -> float:
    """Linear KL annealing (Liang et al. 2018): beta grows from 0 to ``anneal_cap``."""
    if total_anneal_steps <= 0:
        return anneal_cap
    return min(anneal_cap, step / total_anneal_steps)
