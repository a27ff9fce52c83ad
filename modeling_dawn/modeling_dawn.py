"""DAWN models for Transformers: DawnModel and its causal-LM, masked-LM and sequence-classification heads.

DAWN (Choi 2025, "Dynamic Subspace Composition for Structural Interpretability") owns no per-layer Q/K/V
projection or FFN: each token composes them from low-rank neurons in pools shared by all layers, chosen by a
router. See ../shared/DAWN_SPEC.md (or the model card) for the full specification.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

from .auxiliary_losses import add_term, knowledge_diversity_loss, orthogonality_loss
from .cache_dawn import DawnCache, cache_length
from .configuration_dawn import DawnConfig
from .decoder_layer import DawnDecoderLayer, RoutingInputs
from .modeling_outputs_dawn import (
    DawnCausalLMOutput, DawnMaskedLMOutput, DawnModelOutput, DawnSequenceClassifierOutput,
)
from .routing import ROUTES
from .selective_ssm import DawnSelectiveSSM
from .shared_weights import DawnNeuronPools, DawnRouter, SharedLinear, SharedTensors


def _orthogonal_slices(shape, dtype, device) -> torch.Tensor:
    """[N, a, b] with each slice orthogonal: orthonormal columns if a > b, orthonormal rows otherwise."""
    out = torch.empty(shape, dtype=torch.float32, device=device)
    for n in range(shape[0]):
        nn.init.orthogonal_(out[n])
    return out.to(dtype)


class DawnPreTrainedModel(PreTrainedModel):
    config_class = DawnConfig
    config: DawnConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DawnDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = True
    _can_compile_fullgraph = False

    def _init_weights(self, module):
        """Spec §5: orthogonal neurons, N(0, 0.02) embeddings and linears, zero biases, LayerNorm 1/0,
        A_log N(0, 0.1), context_scale 0.1, usage statistics 0."""
        std = self.config.initializer_range
        if isinstance(module, DawnNeuronPools):
            for param in module.parameters(recurse=False):
                init.copy_(param, _orthogonal_slices(param.shape, param.dtype, param.device))
        elif isinstance(module, DawnRouter):
            init.normal_(module.neuron_embeddings, mean=0.0, std=std)
            for buffer in module.buffers(recurse=False):
                init.zeros_(buffer)
        elif isinstance(module, SharedLinear):
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.bias)
        elif isinstance(module, DawnSelectiveSSM):
            init.normal_(module.A_log, mean=0.0, std=self.config.ssm_a_log_init_std)
            init.constant_(module.context_scale, self.config.context_scale_init)
        else:
            super()._init_weights(module)


class DawnModel(DawnPreTrainedModel):
    """The DAWN trunk: embeddings, the shared neurons and router, (optionally) the SSM, the layers, a final LN.

    `is_causal=False` builds the bidirectional trunk of `DawnForMaskedLM`.
    """

    _auto_class = "AutoModel"

    def __init__(self, config: DawnConfig, is_causal: bool = True):
        super().__init__(config)
        config.validate_dawn()
        self.is_causal = is_causal
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.neurons = DawnNeuronPools(config)
        self.router = DawnRouter(config)
        self.ssm = DawnSelectiveSSM(config) if config.uses_ssm else None
        self.layers = nn.ModuleList(
            [DawnDecoderLayer(config, i, is_causal=is_causal) for i in range(config.num_hidden_layers)]
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    # ------------------------------------------------------------------ input checks

    def _check_inputs(self, input_ids, inputs_embeds, attention_mask, position_ids, past_length):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("DAWN needs exactly one of input_ids or inputs_embeds, got "
                             f"{'both' if input_ids is not None else 'neither'}")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
            if input_ids.dtype.is_floating_point:
                raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
            batch, seq = input_ids.shape
            if input_ids.numel():
                lo, hi = int(input_ids.min()), int(input_ids.max())
                if lo < 0 or hi >= self.config.vocab_size:
                    bad = lo if lo < 0 else hi
                    raise ValueError(
                        f"input_ids contain token id {bad} outside [0, vocab_size={self.config.vocab_size})"
                    )
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"inputs_embeds must be [batch, seq, hidden_size={self.config.hidden_size}], "
                    f"got shape {tuple(inputs_embeds.shape)}"
                )
            batch, seq = inputs_embeds.shape[:2]
        if seq == 0:
            raise ValueError("DAWN got an empty sequence (sequence length 0)")
        if past_length + seq > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {past_length + seq}"
                + (f" (cache {past_length} + new {seq})" if past_length else "")
                + f" exceeds the position table, max_position_embeddings={self.config.max_position_embeddings}"
            )
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or \
                    attention_mask.shape[1] != past_length + seq:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}; expected "
                    f"(batch={batch}, past + current length={past_length + seq})"
                )
        if position_ids is not None:
            if position_ids.shape[-1] != seq or position_ids.dim() != 2 or position_ids.shape[0] not in (1, batch):
                raise ValueError(f"position_ids has shape {tuple(position_ids.shape)}; expected ({batch}, {seq})")
            lo, hi = int(position_ids.min()), int(position_ids.max())
            if lo < 0 or hi >= self.config.max_position_embeddings:
                raise ValueError(
                    f"position_ids contain {lo if lo < 0 else hi}, outside "
                    f"[0, max_position_embeddings={self.config.max_position_embeddings})"
                )
        return batch, seq

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_routing: bool | None = None,
        output_routing_preferences: bool = False,
        output_router_logits: bool | None = None,
        return_dict: bool | None = None,
        past_key_values=None,
        **kwargs,
    ) -> DawnModelOutput | tuple:
        r"""
        input_ids: [B, S] token ids (or `inputs_embeds` [B, S, D]).
        attention_mask: [B, past + S], 1 for real tokens, 0 for padding (left or right).
        position_ids: [B, S]; by default derived from `attention_mask` (so left padding works), else
            past_length + arange(S).
        cache / past_key_values: a `DawnCache` (or `DynamicCache` with token routing) from a previous call.
        output_routing: return each layer's chosen neurons and weights per route (`RouteTrace`);
            `output_routing_preferences=True` adds the dense preferences [B, S, N].
        output_router_logits: return the router logits per layer, as Transformers MoE models do.
        """
        cfg = self.config
        cache = cache if cache is not None else past_key_values
        output_attentions = output_attentions if output_attentions is not None else cfg.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else cfg.output_hidden_states
        output_router_logits = output_router_logits if output_router_logits is not None else cfg.output_router_logits
        output_routing = bool(output_routing) or output_routing_preferences
        return_dict = return_dict if return_dict is not None else cfg.return_dict
        use_cache = use_cache if use_cache is not None else (cfg.use_cache and not self.training)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if checkpointing:
            fn_kwargs = getattr(getattr(self, "_gradient_checkpointing_func", None), "keywords", {}) or {}
            if fn_kwargs.get("use_reentrant", False):
                raise ValueError("DAWN supports activation checkpointing with use_reentrant=False only "
                                 "(activation_checkpointing_kwargs={'use_reentrant': False})")
            use_cache = False

        past_length = cache_length(cache)
        batch, seq = self._check_inputs(input_ids, inputs_embeds, attention_mask, position_ids, past_length)
        if use_cache and cache is None:
            cache = DawnCache(config=cfg)
        if cache is not None and cfg.uses_ssm and not isinstance(cache, DawnCache):
            raise ValueError(
                "cumulative routing needs a DawnCache (it carries the SSM and running routing state), got "
                f"{type(cache).__name__}"
            )

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        device = inputs_embeds.device
        if attention_mask is not None:
            attention_mask = attention_mask.to(device)
            valid = attention_mask[:, -seq:].bool()
        else:
            valid = torch.ones(batch, seq, dtype=torch.bool, device=device)
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq:]
            else:
                position_ids = torch.arange(past_length, past_length + seq, device=device).unsqueeze(0)
        position_ids = position_ids.to(device)

        hidden = inputs_embeds + self.embed_positions(position_ids)
        hidden = F.dropout(hidden, cfg.hidden_dropout, self.training)

        scores = None
        if self.ssm is not None:
            ssm_state = cache.get_state("ssm") if cache is not None else None
            scores, context, ssm_state = self.ssm(hidden, valid, state=ssm_state)
            if cache is not None:
                cache.set_state("ssm", ssm_state)
            if cfg.use_ssm_context:
                hidden = hidden + context

        if self.is_causal:
            mask = create_causal_mask(
                config=cfg, inputs_embeds=hidden, attention_mask=attention_mask, cache=cache,
                position_ids=torch.arange(past_length, past_length + seq, device=device).unsqueeze(0),
            )
        else:
            mask = create_bidirectional_mask(config=cfg, inputs_embeds=hidden, attention_mask=attention_mask)

        shared = SharedTensors(*self.neurons(), *self.router())
        want_statistics = self.training
        ctx = RoutingInputs(
            valid=valid, scores=scores, causal=self.is_causal, cache=None if checkpointing else cache,
            want_traces=output_routing, want_preferences=output_routing_preferences,
            want_logits=output_router_logits, want_statistics=want_statistics,
        )

        all_hidden, all_attn, all_routing, all_logits = [], [], [], []
        load_balance = knowledge_load_balance = None
        fractions = {route.name: [] for route in ROUTES}
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden)
            hidden, info, probs = layer(
                hidden, shared=shared, routing_inputs=ctx, attention_mask=mask, cache=cache,
                output_attentions=output_attentions,
            )
            if output_attentions:
                all_attn.append(probs)
            if output_routing:
                all_routing.append(info.traces)
            if output_router_logits:
                all_logits.append(torch.cat(info.logits, dim=-1).reshape(batch * seq, -1))
            if want_statistics:
                load_balance = add_term(load_balance, info.load_balance)
                knowledge_load_balance = add_term(knowledge_load_balance, info.knowledge_load_balance)
                for name, fraction in info.fractions.items():
                    fractions[name].append(fraction)
        hidden = self.norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)

        orth = diversity = None
        if want_statistics:
            self.router.update_usage({name: torch.stack(f).mean(0) for name, f in fractions.items()})
            fa, ra = shared.feature_attention, shared.restore_attention
            orth = orthogonality_loss(
                [fa[: cfg.n_feature_qk], fa[cfg.n_feature_qk:], shared.feature_knowledge],
                [ra[: cfg.n_restore_qk], ra[cfg.n_restore_qk:], shared.restore_knowledge],
            )
            diversity = knowledge_diversity_loss(shared.feature_knowledge, shared.restore_knowledge)

        out = DawnModelOutput(
            last_hidden_state=hidden,
            cache=cache if use_cache else None,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attn) if output_attentions else None,
            routing=tuple(all_routing) if output_routing else None,
            router_logits=tuple(all_logits) if output_router_logits else None,
            load_balance_loss=load_balance,
            orthogonality_loss=orth,
            knowledge_diversity_loss=diversity,
            knowledge_load_balance_loss=knowledge_load_balance,
        )
        return out if return_dict else out.to_tuple()


def weighted_aux_loss(config, outputs: DawnModelOutput, scale: float | torch.Tensor = 1.0):
    """coef-weighted sum of the auxiliary terms present in `outputs` (None outside training)."""
    terms = [
        (config.load_balance_coef, outputs.load_balance_loss),
        (config.orthogonality_coef, outputs.orthogonality_loss),
        (config.knowledge_diversity_coef, outputs.knowledge_diversity_loss),
        (config.knowledge_load_balance_coef, outputs.knowledge_load_balance_loss),
    ]
    present = [coef * term for coef, term in terms if term is not None]
    if not present:
        return None
    return sum(present) * scale


def _aux_share(labels: torch.Tensor, num_items_in_batch, shift: bool):
    """Fraction of the accumulated batch's label tokens that are in this micro-batch.

    Trainer sums micro-batch losses whose cross-entropy is divided by the tokens of the whole accumulation
    window (`num_items_in_batch`); scaling the auxiliary loss by this share makes the accumulated auxiliary
    gradient equal to one full-batch one (exact for the weight-only terms).
    """
    if num_items_in_batch is None:
        return 1.0
    lab = labels[..., 1:] if shift else labels
    total = torch.as_tensor(num_items_in_batch, device=labels.device).to(torch.float64)
    return (lab != -100).sum().to(torch.float64) / total


def _check_labels(labels, batch, seq, name="labels"):
    if labels is not None and tuple(labels.shape) != (batch, seq):
        raise ValueError(f"{name} has shape {tuple(labels.shape)}; expected (batch={batch}, seq={seq})")


_HEAD_OUTPUT_FIELDS = (
    "hidden_states", "attentions", "routing", "router_logits",
    "load_balance_loss", "orthogonality_loss", "knowledge_diversity_loss", "knowledge_load_balance_loss",
)


class DawnForCausalLM(DawnPreTrainedModel, GenerationMixin):
    _auto_class = "AutoModelForCausalLM"
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DawnConfig):
        super().__init__(config)
        self.model = DawnModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # cumulative routing carries recurrent state that cannot be rolled back (no assisted decoding)
        self._is_stateful = config.uses_ssm
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def _validate_generated_length(self, generation_config, input_ids_length, has_default_max_length):
        """Refuse, before generating anything, a prompt plus new tokens longer than the position table."""
        super()._validate_generated_length(generation_config, input_ids_length, has_default_max_length)
        limit = self.config.max_position_embeddings
        if generation_config.max_length > limit:
            raise ValueError(
                f"prompt length {input_ids_length} + up to {generation_config.max_length - input_ids_length} new "
                f"tokens = {generation_config.max_length} exceeds max_position_embeddings={limit}; "
                f"lower max_new_tokens or shorten the prompt"
            )

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        """generate() builds a DynamicCache by default; DAWN needs its own (recurrent routing state)."""
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        if type(model_kwargs.get("cache")) is DynamicCache:
            model_kwargs["cache"] = DawnCache(config=self.config)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_routing: bool | None = None,
        output_routing_preferences: bool = False,
        output_router_logits: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values=None,
        **kwargs,
    ) -> DawnCausalLMOutput | tuple:
        r"""labels: [B, S] next-token targets (shifted inside, -100 ignored). In training mode the loss adds the
        coefficient-weighted auxiliary terms (`aux_loss`). Other arguments as in `DawnModel.forward`."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            cache=cache if cache is not None else past_key_values, inputs_embeds=inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            output_routing=output_routing, output_routing_preferences=output_routing_preferences,
            output_router_logits=output_router_logits, return_dict=True,
        )
        hidden = outputs.last_hidden_state
        _check_labels(labels, *hidden.shape[:2])
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)

        loss = None
        num_items = kwargs.get("num_items_in_batch")
        aux = weighted_aux_loss(self.config, outputs)
        if labels is not None:
            loss = self.loss_function(logits, labels, self.vocab_size, **kwargs)
            if aux is not None:
                loss = loss + (aux * _aux_share(labels, num_items, shift=True)).to(loss.dtype)
        out = DawnCausalLMOutput(
            loss=loss, logits=logits, aux_loss=aux, cache=outputs.cache,
            **{name: getattr(outputs, name) for name in _HEAD_OUTPUT_FIELDS},
        )
        return out if return_dict else out.to_tuple()


class DawnForMaskedLM(DawnPreTrainedModel):
    """Bidirectional DAWN with a tied LM head; cumulative routing averages over all valid positions."""

    _auto_class = "AutoModelForMaskedLM"

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DawnConfig):
        super().__init__(config)
        self.model = DawnModel(config, is_causal=False)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_routing: bool | None = None,
        output_routing_preferences: bool = False,
        output_router_logits: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DawnMaskedLMOutput | tuple:
        r"""labels: [B, S] with the original ids at masked positions and -100 elsewhere."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            inputs_embeds=inputs_embeds, use_cache=False, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, output_routing=output_routing,
            output_routing_preferences=output_routing_preferences, output_router_logits=output_router_logits,
            return_dict=True,
        )
        _check_labels(labels, *outputs.last_hidden_state.shape[:2])
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        aux = weighted_aux_loss(self.config, outputs)
        if labels is not None:
            loss = self.loss_function(logits, labels, self.vocab_size, **kwargs)
            if aux is not None:
                share = _aux_share(labels, kwargs.get("num_items_in_batch"), shift=False)
                loss = loss + (aux * share).to(loss.dtype)
        out = DawnMaskedLMOutput(
            loss=loss, logits=logits, aux_loss=aux,
            **{name: getattr(outputs, name) for name in _HEAD_OUTPUT_FIELDS},
        )
        return out if return_dict else out.to_tuple()


class DawnForSequenceClassification(DawnPreTrainedModel):
    """Causal DAWN trunk pooled at the last non-padding token, then a linear score head (no bias)."""

    _auto_class = "AutoModelForSequenceClassification"

    def __init__(self, config: DawnConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = DawnModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_routing: bool | None = None,
        output_routing_preferences: bool = False,
        output_router_logits: bool | None = None,
        return_dict: bool | None = None,
        past_key_values=None,
        **kwargs,
    ) -> DawnSequenceClassifierOutput | tuple:
        r"""labels: [B] class ids (single-label), [B, num_labels] floats (multi-label) or [B] / [B, 1] floats
        (regression, `num_labels=1`); `config.problem_type` is inferred as in Transformers when unset."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            cache=cache if cache is not None else past_key_values, inputs_embeds=inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            output_routing=output_routing, output_routing_preferences=output_routing_preferences,
            output_router_logits=output_router_logits, return_dict=True,
        )
        hidden = outputs.last_hidden_state
        batch, seq = hidden.shape[:2]
        if attention_mask is not None:
            valid = attention_mask[:, -seq:].to(hidden.device).bool()
        elif input_ids is not None and self.config.pad_token_id is not None:
            valid = input_ids != self.config.pad_token_id
        else:
            valid = torch.ones(batch, seq, dtype=torch.bool, device=hidden.device)
        # last valid position of each row (works for left and right padding); an all-padding row pools position 0
        positions = torch.arange(seq, device=hidden.device)
        last = torch.where(valid, positions, -1).amax(dim=-1).clamp(min=0)
        logits = self.score(hidden[torch.arange(batch, device=hidden.device), last])  # [B, num_labels]

        loss = None
        aux = weighted_aux_loss(self.config, outputs)
        if labels is not None:
            if labels.shape[0] != batch:
                raise ValueError(f"labels has shape {tuple(labels.shape)}; expected batch size {batch} first")
            loss = self.loss_function(logits=logits, labels=labels, pooled_logits=logits, config=self.config)
            if aux is not None:
                loss = loss + aux
        out = DawnSequenceClassifierOutput(
            loss=loss, logits=logits, aux_loss=aux, cache=outputs.cache,
            **{name: getattr(outputs, name) for name in _HEAD_OUTPUT_FIELDS},
        )
        return out if return_dict else out.to_tuple()


__all__ = [
    "DawnPreTrainedModel", "DawnModel", "DawnForCausalLM", "DawnForMaskedLM", "DawnForSequenceClassification",
]
