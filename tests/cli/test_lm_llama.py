"""`attnkit lm` with the Llama lineage end to end: `lm train --preset llama-tiny` (trains, resumes, samples,
exports to a directory transformers loads), `lm sample DIR` / `--hf DIR` on a Hugging Face Qwen2 directory,
and `--chat` / `--message` / `--messages` against the checkpoint's chat template."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from attnkit.cli.main import main
from attnkit.data.text import RandomBlocks
from attnkit.evaluation.perplexity import lm_loss_sum
from attnkit.models.hf.llama import save_llama
from attnkit.tasks.runs import open_run

transformers.logging.set_verbosity_error()
TRAIN = ["--preset", "llama-tiny", "--block-size", "16", "--d-model", "32", "--n-layers", "2", "--batch-size", "4",
         "--eval-every", "3", "--ckpt-every", "3", "--log-every", "1", "--quiet", "--seed", "1"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "speaks", "to", "all", "and", "none", "hear"]
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("".join(" ".join(rng.choice(words, 6)) + ".\n" for _ in range(150)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the king speaks to all and none hear"] * 20, trainer=trainer)
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=48,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   tie_word_embeddings=True, initializer_range=0.3,
                                   eos_token_id=tok.token_to_id("<|im_end|>"))
    d = tmp_path_factory.mktemp("qwen2")
    transformers.Qwen2ForCausalLM(cfg).save_pretrained(d)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                         chat_template=CHATML).save_pretrained(d)
    return d


def test_train_llama_tiny_resume_sample_and_export(text: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["lm", "train", "--text", str(text), "--out", str(out), "--steps", "3", *TRAIN]) == 0
    assert main(["lm", "train", "--text", str(text), "--out", str(out), "--steps", "6", *TRAIN]) == 0  # resumes
    config = json.loads((out / "gpt_config.json").read_text())
    assert (config["positions"], config["norm"], config["activation"], config["n_kv_heads"]) == (
        "rope", "rmsnorm", "swiglu", 2)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["kind"] == "eval"] == [3, 6]
    capsys.readouterr()
    greedy = ["--prompt", "the queen", "--max-new-tokens", "8", "--temperature", "0"]
    assert main(["lm", "sample", str(out), *greedy]) == 0
    sampled = capsys.readouterr().out
    assert sampled.startswith("the queen") and len(sampled) > len("the queen\n")
    run = open_run(out)
    save_llama(run.model, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([run.tokenizer.encode("the queen")])
    with torch.no_grad():
        torch.testing.assert_close(run.model(ids), hf(ids).logits, atol=1e-5, rtol=0)


def test_sample_and_chat_with_a_hugging_face_directory(qwen_dir: Path, tmp_path: Path, capsys) -> None:
    run = open_run(qwen_dir)
    greedy = ["--max-new-tokens", "10", "--temperature", "0"]
    capsys.readouterr()
    assert main(["lm", "sample", str(qwen_dir), "--prompt", "the king", *greedy]) == 0
    assert capsys.readouterr().out == run.generate("the king", max_new_tokens=10, temperature=0.0) + "\n"
    assert main(["lm", "sample", "--hf", str(qwen_dir), "--prompt", "the king", *greedy]) == 0
    assert capsys.readouterr().out == run.generate("the king", max_new_tokens=10, temperature=0.0) + "\n"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the king speaks"}]
    reply = run.chat(messages, max_new_tokens=10, temperature=0.0)
    (tmp_path / "chat.json").write_text(json.dumps(messages))
    for argv in (["--messages", str(tmp_path / "chat.json")],
                 ["--message", "system:Be brief.", "--message", "user:the king speaks"]):
        assert main(["lm", "sample", str(qwen_dir), *argv, *greedy]) == 0
        assert capsys.readouterr().out == reply + "\n"
    assert main(["lm", "sample", str(qwen_dir), "--chat", "--prompt", "the king speaks", *greedy]) == 0
    assert capsys.readouterr().out == run.chat(messages[1:], max_new_tokens=10, temperature=0.0) + "\n"


def test_fine_tune_a_hugging_face_directory_with_the_training_loop(qwen_dir: Path, text: Path, tmp_path: Path,
                                                                  capsys) -> None:
    """`lm train --init DIR`: the checkpoint's tokenizer, config and weights; the first loss is the loaded
    model's loss on the first batch; the run resumes, keeps the chat template and exports."""
    out = tmp_path / "ft"
    ft = ["--init", str(qwen_dir), "--block-size", "12", "--batch-size", "2", "--log-every", "1", "--quiet",
          "--eval-every", "2", "--ckpt-every", "2", "--lr", "1e-3", "--warmup", "0", "--schedule", "constant"]
    assert main(["lm", "train", "--text", str(text), "--out", str(out), "--steps", "2", *ft]) == 0
    assert main(["lm", "train", "--text", str(text), "--out", str(out), "--steps", "4", *ft]) == 0  # resumes
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if r["kind"] == "train"]
    assert len(losses) == 4
    base = open_run(qwen_dir)
    first = RandomBlocks(np.load(out / "data" / "train.npy"), 12, 2, 0, 0)[0]
    with torch.no_grad():
        expected = float(lm_loss_sum(base.model, first.x, first.y)) / first.y.numel()
    assert losses[0] == pytest.approx(expected, abs=1e-4)
    run = open_run(out)
    assert run.model.config == base.model.config and run.can("chat")
    assert run.tokenizer.chat_template == base.tokenizer.chat_template
    assert not torch.equal(run.model.lm_head.weight, base.model.lm_head.weight)  # trained
    messages = [{"role": "user", "content": "the king speaks"}]
    capsys.readouterr()
    assert main(["lm", "sample", str(out), "--chat", "--prompt", "the king speaks", "--max-new-tokens", "5",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out == run.chat(messages, max_new_tokens=5, temperature=0.0) + "\n"
    save_llama(run.model, tmp_path / "hf", run.tokenizer)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([run.tokenizer.encode("the king")])
    with torch.no_grad():
        torch.testing.assert_close(run.model(ids), hf(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case,pattern", [
    ("no-template", "no chat template"),
    ("bad-message", "expected ROLE:TEXT"),
    ("bad-file", "must hold a JSON list"),
])
def test_chat_errors_are_one_line(case: str, pattern: str, qwen_dir: Path, text: Path, tmp_path: Path,
                                  capsys) -> None:
    (tmp_path / "bad.json").write_text('{"role": "user"}')
    if case == "no-template":
        out = tmp_path / "run"
        assert main(["lm", "train", "--text", str(text), "--out", str(out), "--steps", "1", *TRAIN]) == 0
        argv = ["lm", "sample", str(out), "--chat", "--prompt", "the"]
    else:
        argv = ["lm", "sample", str(qwen_dir), *{"bad-message": ["--message", "hello"],
                                                 "bad-file": ["--messages", str(tmp_path / "bad.json")]}[case]]
    capsys.readouterr()
    if case == "bad-message":  # argparse's own error: usage, then one error line, exit 2
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
    else:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(pattern, err), err
