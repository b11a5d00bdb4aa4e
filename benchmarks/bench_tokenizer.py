"""Encode 1 MB of text with minillama's pure-Python tokenizers and with the libraries they must equal, same models.

1. SentencePiece: the model minillama ships (minillama/data/tiny/tokenizer.model, or --model) against the
   sentencepiece C++ library.
2. Byte-level BPE: a Llama 3-style tokenizer (its pre-tokenizer pattern, ignore_merges, 8000 tokens) trained here
   with Hugging Face's `tokenizers`, against that Rust library, both starting cold (no cache carried between runs).

Prints a table per tokenizer with the ratio (target: within 20x of the library). Usage:
python benchmarks/bench_tokenizer.py. The text is CPython's documentation (pydoc_data) plus the source of a few
stdlib modules, repeated to 1 MB.
"""
import argparse, inspect, json, time, textwrap
from pathlib import Path
import pydoc_data.topics
import sentencepiece as spm
from minillama.tokenizer import Tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(Path(__import__("minillama").__file__).parent / "data" / "tiny" / "tokenizer.model"))
    ap.add_argument("--mb", type=float, default=1.0)
    a = ap.parse_args()
    base = "\n".join(pydoc_data.topics.topics.values()) + inspect.getsource(json) + inspect.getsource(textwrap)
    text = (base * (int(a.mb * 2**20) // len(base) + 1))[: int(a.mb * 2**20)]
    lines = text.splitlines()
    ref = spm.SentencePieceProcessor(model_file=a.model)
    rows = []
    t = time.perf_counter(); ref_ids = [ref.encode(l) for l in lines]; t_ref = time.perf_counter() - t
    nocache = Tokenizer.from_file(a.model); nocache.cache_size = 0
    t = time.perf_counter(); plain = [nocache.encode(l) for l in lines]; t_none = time.perf_counter() - t
    assert plain == ref_ids, "ids differ from the library"
    tok = Tokenizer.from_file(a.model)
    t = time.perf_counter(); ours = [tok.encode(l) for l in lines]; t_cold = time.perf_counter() - t
    t = time.perf_counter(); [tok.encode(l) for l in lines]; t_warm = time.perf_counter() - t
    assert ours == ref_ids, "ids differ from the library"
    n_tok = sum(map(len, ours))
    print(f"{len(text)/2**20:.2f} MB, {len(lines):,} lines, {n_tok:,} tokens, vocab {tok.vocab_size}; ids identical to the library\n")
    print(f"{'encoder':32s} {'seconds':>8s} {'MB/s':>7s} {'vs library':>11s}")
    for name, s in [("sentencepiece (C++)", t_ref), ("minillama, no word cache", t_none),
                    ("minillama, cold word cache", t_cold), ("minillama, warm word cache", t_warm)]:
        print(f"{name:32s} {s:8.2f} {len(text)/2**20/s:7.2f} {s/t_ref:10.1f}x")

    from minillama.bpe import train_bpe, bpe_from_tokenizer_json
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        hf = train_bpe(list(pydoc_data.topics.topics.values()), "llama-bpe", 8000, ["<|begin_of_text|>", "<|eot_id|>"])
        hf.save(f"{d}/tokenizer.json")
        t = time.perf_counter(); ref_ids = [hf.encode(l).ids for l in lines]
        t_ref = time.perf_counter() - t
        t = time.perf_counter(); hf.encode(text); t_one = time.perf_counter() - t
        bpe = bpe_from_tokenizer_json(f"{d}/tokenizer.json")                       # a fresh one: its word cache is empty
        t = time.perf_counter(); ours = [bpe.encode(l) for l in lines]; t_cold = time.perf_counter() - t
        t = time.perf_counter(); [bpe.encode(l) for l in lines]; t_warm = time.perf_counter() - t
    assert ours == ref_ids, "byte-level BPE ids differ from tokenizers"
    print(f"\nbyte-level BPE (Llama 3 pre-tokenizer), vocab {bpe.vocab_size}: {sum(map(len, ours)):,} tokens, "
          f"ids identical to tokenizers\n")
    print(f"{'encoder':32s} {'seconds':>8s} {'MB/s':>7s} {'vs library':>11s}")
    for name, s in [("tokenizers (Rust), line by line", t_ref), ("tokenizers, the 1 MB in one call", t_one),
                    ("minillama, cold word cache", t_cold),
                    ("minillama, warm word cache", t_warm)]:
        print(f"{name:32s} {s:8.2f} {len(text)/2**20/s:7.2f} {s/t_ref:10.1f}x")


if __name__ == "__main__":
    main()
