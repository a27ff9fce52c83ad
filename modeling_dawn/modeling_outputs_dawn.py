"""Output classes of the DAWN models: the usual Transformers fields plus routing traces and auxiliary losses."""

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class DawnModelOutput(ModelOutput):
    """
    last_hidden_state: [B, S, D] after the final LayerNorm.
    cache: the decoding cache (`DawnCache`) when `use_cache=True`.
    hidden_states: embeddings and the output of every layer (`output_hidden_states=True`).
    attentions: per-layer attention probabilities (`output_attentions=True`, eager attention).
    routing: per layer, a dict route name -> `RouteTrace(indices [B,S,k], weights [B,S,k], preferences)`
        (`output_routing=True`).
    router_logits: per layer, the router logits of the eight routes concatenated, [B*S, sum N]
        (`output_router_logits=True`; `routing.router_logit_slices(config)` gives each route's columns).
    load_balance_loss / orthogonality_loss / knowledge_diversity_loss: the unweighted auxiliary terms (training).
    knowledge_load_balance_loss: the same load-balance term over the two knowledge routes (training; weighted by
        `knowledge_load_balance_coef`, 0 in the paper's recipe).
    """

    last_hidden_state: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    routing: tuple | None = None
    router_logits: tuple | None = None
    load_balance_loss: torch.Tensor | None = None
    orthogonality_loss: torch.Tensor | None = None
    knowledge_diversity_loss: torch.Tensor | None = None
    knowledge_load_balance_loss: torch.Tensor | None = None


@dataclass
class DawnCausalLMOutput(ModelOutput):
    """`loss` = cross-entropy + `aux_loss` (in training); `aux_loss` = the coefficient-weighted sum of the
    auxiliary terms, which are also given separately. Other fields as in `DawnModelOutput`."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    routing: tuple | None = None
    router_logits: tuple | None = None
    load_balance_loss: torch.Tensor | None = None
    orthogonality_loss: torch.Tensor | None = None
    knowledge_diversity_loss: torch.Tensor | None = None
    knowledge_load_balance_loss: torch.Tensor | None = None


@dataclass
class DawnMaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    routing: tuple | None = None
    router_logits: tuple | None = None
    load_balance_loss: torch.Tensor | None = None
    orthogonality_loss: torch.Tensor | None = None
    knowledge_diversity_loss: torch.Tensor | None = None
    knowledge_load_balance_loss: torch.Tensor | None = None


@dataclass
class DawnSequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    routing: tuple | None = None
    router_logits: tuple | None = None
    load_balance_loss: torch.Tensor | None = None
    orthogonality_loss: torch.Tensor | None = None
    knowledge_diversity_loss: torch.Tensor | None = None
    knowledge_load_balance_loss: torch.Tensor | None = None


__all__ = ["DawnModelOutput", "DawnCausalLMOutput", "DawnMaskedLMOutput", "DawnSequenceClassifierOutput"]
