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
