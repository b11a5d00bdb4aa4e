"The model minillama ships, and the `generate` / `tokenize` commands that use it."
import json
import subprocess
import numpy as np
import pytest
import sentencepiece as spm
import pydoc_data.topics

import minillama
from minillama.cli import shipped_model, main
from minillama.core import assert_close
from minillama.tokenizer import Tokenizer


def run(*args):
    return subprocess.run(["minillama", *args], capture_output=True, text=True, timeout=300)


def test_files_and_size():
    d = shipped_model()
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "train_log.json"} <= names
    total = sum(p.stat().st_size for p in d.iterdir())
    assert total <= 20 * 2**20, total
    log = json.loads((d / "train_log.json").read_text())
    assert log["val_perplexity"] < 100 and log["params"] > 3e6


def test_tokenizer_matches_library_on_held_out_text():
    d = shipped_model()
    ref = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    tok = Tokenizer.from_file(d / "tokenizer.model")
    names = sorted(pydoc_data.topics.topics)
    lines = [l for i, n in enumerate(names) if i % 10 == 5 for l in pydoc_data.topics.topics[n].splitlines()]
    assert len(lines) > 500
    for l in lines:
        assert tok.encode(l) == ref.encode(l), l
        assert tok.decode(ref.encode(l)) == ref.decode(ref.encode(l))


def test_shipped_model_matches_transformers():
    import torch
    from transformers import LlamaForCausalLM
    d = shipped_model()
    hf = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    ids = Tokenizer.from_file(d / "tokenizer.model").encode("The \"with\" statement is used to", bos=True)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    for be in ("numpy", "torch"):
        assert_close(minillama.load(d, be).forward(np.array(ids)), ref, what=f"shipped model {be} vs transformers")


def test_generate_same_text_both_backends():
    args = ["generate", "The \"if\" statement", "--max-new-tokens", "30", "--seed", "3"]
    a, b = run(*args, "--backend", "numpy"), run(*args, "--backend", "torch", "--device", "cpu")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and a.stdout.startswith('The "if" statement') and len(a.stdout) > 40
    c = run(*args[:-1], "4", "--backend", "numpy")
    assert c.stdout != a.stdout


def test_generate_greedy_streams(capsys):
    assert main(["generate", "Assert statements are", "--temperature", "0", "--max-new-tokens", "20"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Assert statements are") and len(out) > len("Assert statements are") + 10


def test_tokenize_prints_ids_and_pieces():
    r = run("tokenize", "def f(x): return 42 🙂", "--bos")
    assert r.returncode == 0
    rows = [l.split("\t") for l in r.stdout.splitlines()]
    tok = Tokenizer.from_file(shipped_model() / "tokenizer.model")
    assert [int(i) for i, _ in rows] == tok.encode("def f(x): return 42 🙂", bos=True)
    assert [p for _, p in rows] == [tok.id_to_piece(int(i)) for i, _ in rows]
    assert "<0xF0>" in r.stdout                                   # the emoji falls back to bytes


@pytest.mark.parametrize("args, code, must", [
    (["generate", "x", "--backend", "jax"], 2, "invalid choice"),
    (["generate", "x", "--max-new-tokens", "many"], 2, "invalid int"),
    (["generate", "x", "--device", "cuda"], 1, "device 'cuda'"),
    (["generate", "x", "--model", "/no/such/model"], 1, "/no/such/model"),
    (["generate", "x", "--top-p", "0"], 1, "top_p"),
    (["generate", "x", "--temperature", "-1"], 1, "temperature"),
    (["generate", "word " * 600], 1, "context"),
    (["tokenize", "x", "--model", "/no/such/tokenizer.model"], 1, "no such file"),
])
def test_bad_input_one_line_no_traceback(args, code, must):
    r = run(*args)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert must in r.stderr and "Traceback" not in r.stderr
    if code == 1: assert r.stderr.count("\n") == 1, r.stderr


def test_generate_debug_shows_traceback():
    r = run("--debug", "generate", "x", "--model", "/no/such/model")
    assert r.returncode != 0 and "Traceback" in r.stderr
