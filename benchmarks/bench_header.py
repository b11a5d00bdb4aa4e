"""Opening GGUF files: the header and tensor table of a Llama 3-sized vocabulary, and `minillama.load` of a model.

1. A GGUF whose header holds 128,256 token strings and 280,147 merges (Llama 3's counts) plus their token types:
   time to open it (header + tensor table), and then to decode the vocabulary the first time a tokenizer asks.
   Target: open in <= 100 ms.
2. `minillama.load` of the benchmarks' 220M-parameter F32 model (dim 1024, 12 layers, vocab 32000) written with a
   32,000-token vocabulary, warm page cache. Target: <= 10 ms.

gguf (llama.cpp's Python reader) opens the same files in the same run for reference. Usage:
python benchmarks/bench_header.py
"""
import tempfile
from pathlib import Path
import numpy as np
import gguf
import minillama
from minillama.core import time_it
from minillama.gguf import GGUFFile, write_gguf
from minillama.gguf_llama import write_random_gguf
from minillama.model import LlamaConfig


def vocab_md(n_tokens, n_merges, seed=0):
    rng = np.random.default_rng(seed)
    toks = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyzĠ"), int(k))) + str(i) for i, k in
            enumerate(rng.integers(1, 8, n_tokens))]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.tokens": toks,
            "tokenizer.ggml.token_type": np.ones(n_tokens, np.int32),
            "tokenizer.ggml.merges": [f"{toks[i % n_tokens]} {toks[(i * 7) % n_tokens]}" for i in range(n_merges)]}


def main():
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        d = Path(d)
        big = d / "vocab.gguf"
        write_gguf(big, vocab_md(128_256, 280_147), {"w": (np.zeros((4, 32), np.float32), "F32")}, progress=False)
        t_open = time_it(lambda: GGUFFile(big))
        t_decode = time_it(lambda: len(GGUFFile(big).metadata["tokenizer.ggml.tokens"][:1]), 3, warmup=0) - t_open
        t_ref = time_it(lambda: gguf.GGUFReader(big), 3, warmup=0)
        print(f"header with 128,256 tokens and 280,147 merges ({big.stat().st_size / 2**20:.1f} MiB)")
        print(f"{'':34s} {'ms':>8s}")
        print(f"{'minillama: open (header, tensors)':34s} {t_open * 1e3:8.1f}   target <= 100")
        print(f"{'minillama: decode the tokens':34s} {t_decode * 1e3:8.1f}   (once, when a tokenizer asks)")
        print(f"{'gguf.GGUFReader: open':34s} {t_ref * 1e3:8.1f}")
        cfg = LlamaConfig(dim=1024, n_layers=12, n_heads=16, n_kv_heads=16, vocab_size=32000, hidden_dim=2816)
        m = d / "m.gguf"
        write_random_gguf(m, cfg, vocab=True)                            # 32,000 SentencePiece pieces
        t_load = time_it(lambda: minillama.load(m))
        print(f"\nminillama.load of the 220M F32 model with a 32,000-piece SentencePiece vocabulary ({m.stat().st_size / 2**30:.2f} GiB), "
              f"warm: {t_load * 1e3:.1f} ms   target <= 10")


if __name__ == "__main__":
    main()
