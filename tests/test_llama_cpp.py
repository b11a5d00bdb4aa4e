"""GGUF files written by minillama, run by llama.cpp itself (through llama-cpp-python).

llama-cpp-python builds llama.cpp from source (about 8 minutes on 2 cores), so it is not in the dev extra; these tests
run where it is installed (`pip install llama-cpp-python`) and are skipped elsewhere. llama.cpp's KV cache is F16 by
default; we ask for F32 (type_k=type_v=0) so that float32 tolerances apply.
"""
import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")

import minillama
from minillama.cli import shipped_model
from minillama.core import assert_close
from minillama.gguf_llama import convert_to_gguf
from minillama.tokenizer import Tokenizer

TEXTS = ["The \"for\" statement is used to iterate", "  spaces\tand tabs 🙂 数字 42", "x"]


def run_llama_cpp(path, ids):
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0)
    llm.eval(ids)
    return llm, np.array(llm.scores[:len(ids)])


@pytest.mark.parametrize("outtype, dtype", [("f32", "float32"), ("f16", "float16")])
def test_llama_cpp_runs_the_shipped_model(tmp_path, outtype, dtype):
    out = convert_to_gguf(shipped_model(), tmp_path / "t.gguf", outtype, progress=False)
    tok = Tokenizer.from_file(out)
    ids = tok.encode(TEXTS[0], bos=True)
    llm, ref = run_llama_cpp(out, ids)
    for t in TEXTS:
        assert llm.tokenize(t.encode(), add_bos=True) == tok.encode(t, bos=True), t
    for be in ("numpy", "torch"):
        assert_close(minillama.load(out, be).forward(np.array(ids)), ref, dtype=dtype,
                     rtol=1e-4 if dtype == "float32" else None, what=f"{outtype} GGUF: minillama {be} vs llama.cpp")


def test_llama_cpp_on_converted_llama3(hf_dir, tmp_path):
    "GQA, tied embeddings, llama3 frequency scaling as rope_freqs: llama.cpp on our file == transformers on the checkpoint."
    import shutil
    import sentencepiece as spm
    import pydoc_data.topics
    d, hf = hf_dir("llama3")
    src = tmp_path / "hf"
    shutil.copytree(d, src)
    (tmp_path / "c.txt").write_text("\n".join(list(pydoc_data.topics.topics.values())[:30]))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "c.txt"), model_prefix=str(src / "tokenizer"), model_type="bpe",
                                   vocab_size=512, byte_fallback=True, normalization_rule_name="identity", minloglevel=2)
    out = convert_to_gguf(src, tmp_path / "m.gguf", progress=False)
    ids = [int(i) for i in np.random.default_rng(0).integers(3, 512, size=120)]
    _, ref = run_llama_cpp(out, ids)
    with torch.no_grad():
        hfl = hf(torch.tensor([ids])).logits[0]
    # llama.cpp's own kernels sum in another order: 1e-4 of the largest logit, as before float32's rtol became 1e-5
    assert_close(ref, hfl, rtol=1e-4, what="llama.cpp on our GGUF vs transformers on the checkpoint")
    assert_close(minillama.load(out).forward(np.array(ids)), ref, rtol=1e-4, what="minillama vs llama.cpp")


@pytest.mark.parametrize("style", ["gpt-2", "llama-bpe", "smollm"])
def test_llama_cpp_tokenizes_our_byte_level_gguf(tmp_path, style):
    "A byte-level BPE vocabulary written by `minillama convert` is tokenized by llama.cpp as by us and by tokenizers."
    import json, pydoc_data.topics
    from minillama.bpe import train_bpe
    from minillama.checkpoint import save_safetensors, hf_name
    from minillama.model import LlamaConfig, random_weights
    ref = train_bpe(list(pydoc_data.topics.topics.values())[:40], style, 1000, ["<|begin_of_text|>", "<|eot_id|>"])
    d = tmp_path / "ck"; d.mkdir()
    ref.save(str(d / "tokenizer.json"))
    cfg = LlamaConfig(dim=64, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=ref.get_vocab_size(), hidden_dim=128,
                      max_seq_len=256, tie_embeddings=True)
    save_safetensors(d / "model.safetensors", {hf_name(n): a for n, a in random_weights(cfg).items() if n != "output"})
    (d / "config.json").write_text(json.dumps(dict(architectures=["LlamaForCausalLM"], model_type="llama",
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=cfg.vocab_size, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True)))
    out = convert_to_gguf(d, tmp_path / "m.gguf", progress=False)
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=256, verbose=False, vocab_only=True)
    ours = Tokenizer.from_file(out)
    for t in TEXTS + ["I'm 12345 years old!!  Héllo\n\nworld", "a<|eot_id|>b"]:
        want = ref.encode(t).ids
        assert ours.encode(t) == want and llm.tokenize(t.encode(), add_bos=False, special=True) == want, t
