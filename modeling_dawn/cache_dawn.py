"""The decoding cache: attention K/V per layer, plus the recurrent state of cumulative routing.

Cumulative routing carries, besides K/V, the SSM state h [B, D, Ns] and, per layer and cumulative route, the running
log-sum-exp sums (log numerator [B, N], log denominator [B]) of spec §4. Those cannot be rolled back, so `crop`
refuses when they exist. Every use of the Transformers cache internals is in this file.
"""

import torch
from transformers.cache_utils import DynamicCache


class DawnCache(DynamicCache):
    """`DynamicCache` for K/V plus `recurrent`, a dict of batch-first tensors (SSM and running-routing state)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recurrent: dict[str, torch.Tensor] = {}

    # --- recurrent state -------------------------------------------------------------------------------------
    def get_state(self, key: str) -> torch.Tensor | None:
        return self.recurrent.get(key)

    def set_state(self, key: str, value: torch.Tensor) -> None:
        self.recurrent[key] = value

    # --- batch bookkeeping (beam search, contrastive search) --------------------------------------------------
    def _map_states(self, fn) -> None:
        self.recurrent = {key: fn(value) for key, value in self.recurrent.items()}

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._map_states(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._map_states(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._map_states(lambda t: t[indices.to(t.device)])

    def reset(self) -> None:
        super().reset()
        self.recurrent = {}

    def crop(self, tokens_to_remove: int) -> None:
        if self.recurrent:
            raise ValueError(
                "DawnCache cannot be cropped in cumulative-routing mode: the SSM and running routing state cannot be "
                "rolled back (assisted/speculative decoding is not supported for such models)"
            )
        super().crop(tokens_to_remove)


def cache_length(cache) -> int:
    """Number of positions already in `cache` (0 for None)."""
    return 0 if cache is None else cache.get_seq_length()


__all__ = ["DawnCache", "cache_length"]
