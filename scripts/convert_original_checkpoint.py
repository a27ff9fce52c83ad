"""Convert a research DAWN v17.1 checkpoint (e.g. DAWN-39M) into a Hub-ready Transformers folder.

    python scripts/convert_original_checkpoint.py --checkpoint dawn_39m.pt --output hub/dawn-39m \
        [--config configs/train_config_v17_1_....yaml | config.json] [--tokenizer bert-base-uncased] \
        [--eval_results eval.json] [--dataset allenai/c4]

The checkpoint is a `torch.save` of a plain state dict, or of a dict with `model_state_dict` (torch.compile's
`_orig_mod.` prefixes are removed) and a `config` / `model_config` dict of research constructor keywords. It is
read with `torch.load(weights_only=True)`: no pickled code runs. `--config` adds constructor keywords from JSON
or from a research training YAML (its `model:` section); a key given by both must agree.

The routing flags (attention_token_routing, knowledge_token_routing, use_ssm_context) must be in the config: the
same weights compute different functions under different flags. DAWN-39M: true, true, false.

The key mapping and every check live in dawn_checkpoint.py (KEY_MAP is the table). The output folder is the one
scripts/export_hub_folder.py writes (safetensors, config with auto_map, remote code, tokenizer, generation config,
model card); it loads with `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`. On any failure
nothing is left in the output folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
if __name__ == "__main__" and str(SCRIPTS) not in sys.path:  # siblings import under `python -P` too
    sys.path.insert(0, str(SCRIPTS))  # (imported as a module, it leaves sys.path alone)

import dawn_checkpoint as dc  # noqa: E402
from export_hub_folder import ExportError, _load_tokenizer, export_hub_folder  # noqa: E402


def convert_checkpoint(
    checkpoint,
    output,
    config_file=None,
    tokenizer=None,
    eval_results=None,
    datasets=None,
    license: str = "apache-2.0",
    model_name: str | None = None,
    log=print,
) -> Path:
    """Convert `checkpoint` into the Hub folder `output` (must not exist or be empty). Returns `output`.

    Raises `dawn_checkpoint.CheckpointError` (bad checkpoint/config) or `ExportError` (writing the folder).
    """
    from modeling_dawn import DawnForCausalLM

    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise dc.CheckpointError(f"output folder {output} exists and is not empty")

    state_dict, embedded = dc.load_research_checkpoint(checkpoint)
    from_file = dc.load_config_file(config_file) if config_file else None
    research_config = dc.resolve_research_config(dc.merge_configs(embedded, from_file), state_dict, log=log)
    config = dc.build_dawn_config(research_config)
    converted = dc.convert_state_dict(state_dict, config, log=log)

    tok = _load_tokenizer(tokenizer, Path()) if tokenizer is not None else None
    if tok is not None:
        if len(tok) > config.vocab_size:
            raise dc.CheckpointError(f"the tokenizer has {len(tok)} tokens but the checkpoint's vocabulary has "
                                     f"{config.vocab_size}")
        if tok.pad_token_id is not None:
            config.pad_token_id = tok.pad_token_id

    dtype = converted["model.embed_tokens.weight"].dtype
    model = DawnForCausalLM(config).to(dtype).eval()
    result = model.load_state_dict(converted, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - {"lm_head.weight"}:
        raise dc.CheckpointError(f"loading into DawnForCausalLM: missing {result.missing_keys}, "
                                 f"unexpected {result.unexpected_keys}")
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise dc.CheckpointError("the LM head is not tied to the token embedding after loading")

    with tempfile.TemporaryDirectory(prefix="dawn-convert-") as staging:
        model.save_pretrained(staging, safe_serialization=True)
        export_hub_folder(
            staging, output, tokenizer=tok, eval_results=eval_results, datasets=datasets, license=license,
            model_name=model_name or output.name, expected_state_dict=converted, log=log,
        )
    n = model.num_parameters()
    log(f"converted {checkpoint} -> {output}: {n:,} parameters, "
        f"attention_token_routing={config.attention_token_routing}, "
        f"knowledge_token_routing={config.knowledge_token_routing}, use_ssm_context={config.use_ssm_context}")
    return output


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--checkpoint", required=True, help="the research checkpoint (.pt)")
    p.add_argument("--output", required=True, help="the Hub folder to write (must not exist or be empty)")
    p.add_argument("--config", help="research constructor keywords: JSON, or a training YAML (its model: section)")
    p.add_argument("--tokenizer", help="tokenizer name or path to include (DAWN-39M: bert-base-uncased)")
    p.add_argument("--eval_results", help="JSON with eval_loss / perplexity / eval_accuracy for the model card")
    p.add_argument("--dataset", action="append", dest="datasets", help="training data set (Hub id), repeatable")
    p.add_argument("--license", default="apache-2.0")
    p.add_argument("--model_name", help="title of the model card (default: the output folder's name)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        convert_checkpoint(args.checkpoint, args.output, config_file=args.config, tokenizer=args.tokenizer,
                           eval_results=args.eval_results, datasets=args.datasets, license=args.license,
                           model_name=args.model_name)
    except (dc.CheckpointError, ExportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
