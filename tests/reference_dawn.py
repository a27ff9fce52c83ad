"""A slow, obviously-right DAWN written straight from ../shared/DAWN_SPEC.md, one token at a time.

It shares no code with `modeling_dawn` (only the parameter names): every routing decision, composition, attention
score, SSM step and running average is an explicit loop over positions, so the fast model can be tested against it.

API: `reference_logits(params, config, input_ids, attention_mask=None, causal=True) -> [B, S, V]`

* `params`: dict of tensors keyed by `DawnForCausalLM.state_dict()` names ("model.embed_tokens.weight", ...).
  The LM head is the token embedding (tied), so "lm_head.weight" is not read.
* `config`: a `DawnConfig` (only its fields are read).
* Padded positions (attention_mask == 0) are computed but meaningless; compare valid positions only.
Dropout is not modelled (eval mode). Differentiable, so gradients can be compared too.
"""

import math

import torch

POOL_ORDER = [  # (pool, size field) in neuron-embedding row order: fqk | fv | rqk | rv | fk | rk
    ("feature_qk", "n_feature_qk"), ("feature_v", "n_feature_v"), ("restore_qk", "n_restore_qk"),
    ("restore_v", "n_restore_v"), ("feature_know", "n_feature_know"), ("restore_know", "n_restore_know"),
]
ATTENTION_ROUTES = [  # (route, pool, k field), in the order of the router's attention projection
    ("feature_q", "feature_qk", "top_k_feature_qk"), ("feature_k", "feature_qk", "top_k_feature_qk"),
    ("feature_v", "feature_v", "top_k_feature_v"), ("restore_q", "restore_qk", "top_k_restore_qk"),
    ("restore_k", "restore_qk", "top_k_restore_qk"), ("restore_v", "restore_v", "top_k_restore_v"),
]


def layer_norm(x, weight, bias, eps):
    mean = x.mean()
    var = ((x - mean) ** 2).mean()
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def softmax(v):
    e = torch.exp(v - v.max())
    return e / e.sum()


def topk_weights(p, k):
    """Keep the k largest probabilities (ties: lowest index first), renormalise: -> {neuron: weight}."""
    order = sorted(range(len(p)), key=lambda i: (-float(p[i].detach()), i))[:k]
    total = sum(p[i] for i in order) + 1e-8
    return {i: p[i] / total for i in order}


def reference_logits(params, config, input_ids, attention_mask=None, causal=True, position_ids=None):
    P = {k.removeprefix("model."): v for k, v in params.items()}
    B, S = input_ids.shape
    D, H = config.hidden_size, config.num_attention_heads
    hd = D // H
    eps = config.layer_norm_eps
    mask = torch.ones(B, S, dtype=torch.long) if attention_mask is None else attention_mask
    if position_ids is None:
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)

    # pools and neuron embeddings, split as the spec lays them out
    sizes = {name: getattr(config, field) for name, field in POOL_ORDER}
    emb, start = {}, 0
    for name, _ in POOL_ORDER:
        rows = P["router.neuron_embeddings"][start:start + sizes[name]]
        emb[name] = rows / rows.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        start += sizes[name]
    F_all, G_all = P["neurons.feature_attention"], P["neurons.restore_attention"]
    pools = {
        "feature_qk": F_all[: sizes["feature_qk"]], "feature_v": F_all[sizes["feature_qk"]:],
        "restore_qk": G_all[: sizes["restore_qk"]], "restore_v": G_all[sizes["restore_qk"]:],
        "feature_know": P["neurons.feature_knowledge"], "restore_know": P["neurons.restore_knowledge"],
    }
    Ds = config.router_dim
    W_att, b_att = P["router.attention_proj.weight"], P["router.attention_proj.bias"]
    route_proj = {
        name: (W_att[i * Ds:(i + 1) * Ds], b_att[i * Ds:(i + 1) * Ds]) for i, (name, _, _) in enumerate(ATTENTION_ROUTES)
    }
    route_proj["feature_know"] = (P["router.feature_know_proj.weight"], P["router.feature_know_proj.bias"])
    route_proj["restore_know"] = (P["router.restore_know_proj.weight"], P["router.restore_know_proj.bias"])
    route_pool = {name: pool for name, pool, _ in ATTENTION_ROUTES}
    route_pool.update(feature_know="feature_know", restore_know="restore_know")
    route_k = {name: getattr(config, kf) for name, _, kf in ATTENTION_ROUTES}
    route_k.update(feature_know=config.top_k_feature_know, restore_know=config.top_k_restore_know)

    # embeddings: x[b][t] is a [D] vector
    E, Pos = P["embed_tokens.weight"], P["embed_positions.weight"]
    x = [[E[input_ids[b, t]] + Pos[position_ids[b, t]] for t in range(S)] for b in range(B)]

    # cumulative routing: the SSM, one position at a time (spec §4)
    scores = None
    if not (config.attention_token_routing and config.knowledge_token_routing):
        A = -torch.exp(P["ssm.A_log"])  # [D, Ns]
        scores = [[None] * S for _ in range(B)]
        for b in range(B):
            h = torch.zeros_like(A)
            for t in range(S):
                u = x[b][t]
                if mask[b, t]:
                    delta = torch.nn.functional.softplus(P["ssm.delta_proj.weight"] @ u)  # [D]
                    Bt, Ct = P["ssm.B_proj.weight"] @ u, P["ssm.C_proj.weight"] @ u  # [Ns]
                    h = torch.exp(delta[:, None] * A) * h + (delta * u)[:, None] * Bt[None, :]
                else:
                    Ct = P["ssm.C_proj.weight"] @ u
                y = h @ Ct  # [D]
                y = layer_norm(y, P["ssm.norm.weight"], P["ssm.norm.bias"], eps)
                scores[b][t] = (u * (P["ssm.importance_proj.weight"] @ y)).sum() / config.importance_temperature
                if config.use_ssm_context and mask[b, t]:
                    x[b][t] = x[b][t] + (P["ssm.context_proj.weight"] @ y) * P["ssm.context_scale"]

    def route(name, z_row, b, t, probs_cache):
        """Routing weights {neuron: w} of position t for one route; probs_cache[t] holds p for every position."""
        W, bias = route_proj[name]
        logits = emb[route_pool[name]] @ (W @ z_row + bias)
        circuit_token = config.attention_token_routing if name not in ("feature_know", "restore_know") \
            else config.knowledge_token_routing
        if circuit_token:
            return topk_weights(softmax(logits), route_k[name])
        # importance-weighted average of p over valid positions <= t (all valid positions if not causal)
        taus = [tau for tau in range(S) if mask[b, tau] and (tau <= t or not causal)]
        if not taus:
            return topk_weights(softmax(logits), route_k[name])
        m = max(float(scores[b][tau].detach()) for tau in taus)
        num = sum(torch.exp(scores[b][tau] - m) * probs_cache[tau] for tau in taus)
        den = sum(torch.exp(scores[b][tau] - m) for tau in taus)
        return topk_weights(num / den, route_k[name])

    def compose(z_row, pool, weights):
        """z_row @ sum_n w_n pool[n]."""
        composed = sum(w * pool[n] for n, w in weights.items())
        return z_row @ composed

    def all_probs(name, zs, b):
        W, bias = route_proj[name]
        return [softmax(emb[route_pool[name]] @ (W @ zs[t] + bias)) for t in range(S)]

    for layer in range(config.num_hidden_layers):
        pre = f"layers.{layer}."
        new_x = []
        for b in range(B):
            z = [layer_norm(x[b][t], P[pre + "attention_norm.weight"], P[pre + "attention_norm.bias"], eps)
                 for t in range(S)]
            probs = {name: all_probs(name, z, b) for name, _, _ in ATTENTION_ROUTES}
            q, k, v = [], [], []
            for t in range(S):
                w = {name: route(name, z[t], b, t, probs[name]) for name, _, _ in ATTENTION_ROUTES}
                q.append(compose(compose(z[t], pools["feature_qk"], w["feature_q"]), pools["restore_qk"], w["restore_q"]))
                k.append(compose(compose(z[t], pools["feature_qk"], w["feature_k"]), pools["restore_qk"], w["restore_k"]))
                v.append(compose(compose(z[t], pools["feature_v"], w["feature_v"]), pools["restore_v"], w["restore_v"]))
            row = []
            for t in range(S):
                heads = []
                keys = [tau for tau in range(S) if mask[b, tau] and (tau <= t or not causal)]
                for hh in range(H):
                    sl = slice(hh * hd, (hh + 1) * hd)
                    if not keys:
                        heads.append(torch.zeros_like(q[t][sl]))
                        continue
                    att = torch.stack([q[t][sl] @ k[tau][sl] for tau in keys]) / math.sqrt(hd)
                    a = softmax(att)
                    heads.append(sum(a[i] * v[tau][sl] for i, tau in enumerate(keys)))
                o = P[pre + "attention.o_proj.weight"] @ torch.cat(heads)
                row.append(x[b][t] + o)
            # knowledge circuit
            z2 = [layer_norm(row[t], P[pre + "knowledge_norm.weight"], P[pre + "knowledge_norm.bias"], eps)
                  for t in range(S)]
            probs_k = {name: all_probs(name, z2, b) for name in ("feature_know", "restore_know")}
            out_row = []
            for t in range(S):
                wf = route("feature_know", z2[t], b, t, probs_k["feature_know"])
                wr = route("restore_know", z2[t], b, t, probs_k["restore_know"])
                out_row.append(row[t] + compose(compose(z2[t], pools["feature_know"], wf), pools["restore_know"], wr))
            new_x.append(out_row)
        x = new_x

    logits = [[layer_norm(x[b][t], P["norm.weight"], P["norm.bias"], eps) @ E.T for t in range(S)] for b in range(B)]
    return torch.stack([torch.stack(r) for r in logits])
