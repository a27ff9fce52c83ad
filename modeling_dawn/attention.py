"""The attention circuit: Q, K and V composed from the shared neurons, then standard multi-head attention."""

from collections.abc import Callable

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .neuron_composition import compose_attention


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """query/key/value: [B, H, S, hd]; attention_mask: additive [B, 1, S, S_kv] or None -> ([B, S, H, hd], probs)."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.where(attention_mask, 0.0, torch.finfo(scores.dtype).min).to(scores.dtype)
        scores = scores + attention_mask
    softmax_dtype = torch.promote_types(scores.dtype, torch.float32)  # fp32 for half types, fp64 stays fp64
    probs = nn.functional.softmax(scores, dim=-1, dtype=softmax_dtype).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


class DawnAttention(nn.Module):
    """Owns only the output projection W_O [D, D] (no bias); Q/K/V come from the neuron pools (spec §3)."""

    def __init__(self, config, layer_idx: int, is_causal: bool = True):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.is_causal = is_causal
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = 1
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(
        self,
        z: torch.Tensor,
        feature_pool: torch.Tensor,
        restore_pool: torch.Tensor,
        choices: dict,
        attention_mask: torch.Tensor | None,
        cache=None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z: [B, S, D] (normed); feature_pool [N_fqk + N_fv, D, R], restore_pool [N_rqk + N_rv, R, D] (whole
        attention pools, Q/K rows first); choices: route -> (idx, w)."""
        batch, seq, _ = z.shape
        qkv = compose_attention(
            z, feature_pool, restore_pool, self.config.n_feature_qk, self.config.n_restore_qk, choices,
            impl=self.config.neuron_composition,
        )  # 3 x [B, S, D]
        query, key, value = (t.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2) for t in qkv)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        out, probs = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=self.is_causal if attention_mask is None else None,
            **kwargs,
        )
        return self.o_proj(out.reshape(batch, seq, -1)), probs


__all__ = ["DawnAttention", "eager_attention_forward"]
