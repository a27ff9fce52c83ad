"""Weight-only regularisers of the paper's training recipe (spec §6).

The load-balance term depends on the batch and is computed per layer where the routing happens
(`routing.load_balance_term`) and summed with `add_term`; the two terms here depend only on the neuron pools.
"""

import torch
import torch.nn.functional as F


def add_term(total: torch.Tensor | None, term: torch.Tensor) -> torch.Tensor:
    """Running sum of an auxiliary term over routes / layers; `None` until the first term arrives."""
    return term if total is None else total + term


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _gram_deviation(gram: torch.Tensor) -> torch.Tensor:
    """gram: [N, R, R] -> mean over neurons of mean((gram - I)^2)."""
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return ((gram - eye) ** 2).mean(dim=(-2, -1)).mean()


def orthogonality_loss(feature_pools: list, restore_pools: list) -> torch.Tensor:
    """Average over the six pools of the mean squared deviation of F^T F (feature, [N, D, R]) and
    G G^T (restore, [N, R, D]) from the identity."""
    feature_pools = [_at_least_fp32(f) for f in feature_pools]
    restore_pools = [_at_least_fp32(g) for g in restore_pools]
    terms = [_gram_deviation(f.transpose(-1, -2) @ f) for f in feature_pools]
    terms += [_gram_deviation(g @ g.transpose(-1, -2)) for g in restore_pools]
    return torch.stack(terms).mean()


def _mean_abs_offdiag_cosine(pool: torch.Tensor) -> torch.Tensor:
    """pool: [N, ...] -> mean |cos| between distinct flattened neurons."""
    flat = F.normalize(_at_least_fp32(pool).reshape(pool.shape[0], -1), dim=-1)
    cos = (flat @ flat.transpose(0, 1)).abs()
    n = pool.shape[0]
    if n < 2:
        return cos.new_zeros(())
    return (cos.sum() - cos.diagonal().sum()) / (n * (n - 1))


def knowledge_diversity_loss(feature_knowledge: torch.Tensor, restore_knowledge: torch.Tensor) -> torch.Tensor:
    """Mean |cosine| between distinct knowledge neurons, averaged over the feature and restore pools."""
    return 0.5 * (_mean_abs_offdiag_cosine(feature_knowledge) + _mean_abs_offdiag_cosine(restore_knowledge))


__all__ = ["add_term", "orthogonality_loss", "knowledge_diversity_loss"]
