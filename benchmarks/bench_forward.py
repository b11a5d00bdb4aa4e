"""Prefill and decode speed of minillama (numpy, torch), transformers and llama.cpp on one random ~220M Llama.

The Hugging Face checkpoint is also converted to an F32 GGUF (with a synthetic 32,000-piece vocabulary, which
llama.cpp requires) for llama.cpp (llama-cpp-python, as many threads as cores), where it is installed. Prints a table
with each speed as a ratio to llama.cpp's (or to transformers' without it) and each decode speed as a fraction of the
memory-bandwidth bound:
    decode bound (tokens/s) = read bandwidth (all cores, measured here) / bytes of weights read per token
Usage: python benchmarks/bench_forward.py [--prompt 128] [--decode 32] [--small]
"""
import argparse, atexit, os, shutil, tempfile, threading, time
from pathlib import Path
import numpy as np
import minillama           # before torch, as the README asks: torch's OpenMP threads then sleep between ops
import torch
from transformers import LlamaConfig as HFConfig, LlamaForCausalLM
from llama_cpp_ref import llama_cpp_installed, llama_cpp_model, llama_cpp_speeds


def read_bandwidth(gib: float = 1.0, repeat: int = 5) -> float:
    "Bytes/s reading a `gib` GiB float32 array, one thread per core, each summing its slice (best of `repeat`)."
    a = np.ones(int(gib * 2**30 / 4), np.float32)
    n = os.cpu_count() or 1
    parts = np.array_split(a, n)
    best = float("inf")
    for _ in range(repeat):
        ts = [threading.Thread(target=np.add.reduce, args=(p,)) for p in parts]   # releases the GIL
        t = time.perf_counter()
        for th in ts: th.start()
        for th in ts: th.join()
        best = min(best, time.perf_counter() - t)
    bw_np = a.nbytes / best
    at = torch.from_numpy(a)
    best = min(time.perf_counter() - t for _ in range(repeat) for t in [time.perf_counter()] if at.sum() is not None)
    return max(bw_np, a.nbytes / best)


def best_time(f, repeat=3):
    f()
    return min(time.perf_counter() - t for _ in range(repeat) for t in [time.perf_counter()] if f() is not False)


def llama_cpp_on(ckpt: Path, ids: np.ndarray, n_decode: int) -> tuple[float, float]:
    "(prefill, decode) tokens/s of llama.cpp on the checkpoint converted to an F32 GGUF (decode after 16 tokens)."
    from minillama.gguf_llama import VOCAB_SOURCES, convert_to_gguf, synthetic_vocab, tokenizer_metadata
    (ckpt / "synthetic.vocab").touch()                      # the registry's hook: this name gives 32,000 pieces
    VOCAB_SOURCES["synthetic.vocab"] = lambda p: tokenizer_metadata(synthetic_vocab(32000))
    llm = llama_cpp_model(convert_to_gguf(ckpt, ckpt / "model.gguf", progress=False))
    prompt = [int(i) for i in ids]
    return llama_cpp_speeds(llm, prompt, prompt[:16], n_decode)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", type=int, default=128, help="prefill length (default 128)")
    ap.add_argument("--decode", type=int, default=32, help="tokens to decode (default 32)")
    ap.add_argument("--small", action="store_true", help="a 4-layer dim-256 model, for a quick smoke run")
    a = ap.parse_args()
    have_cpp = llama_cpp_installed()
    torch.set_num_threads(os.cpu_count() or 1)
    shape = (dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4) if a.small else
             dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=12, num_attention_heads=16))
    torch.manual_seed(0)
    hf = LlamaForCausalLM(HFConfig(**shape, num_key_value_heads=shape["num_attention_heads"], vocab_size=32000,
                                   max_position_embeddings=2048)).eval()
    d = Path(tempfile.mkdtemp(prefix="minillama-bench-"))
    atexit.register(shutil.rmtree, d, True)                 # the checkpoint and its GGUF: about 1.8 GB
    hf.save_pretrained(d)
    models = {"numpy": minillama.load(d, "numpy"), "torch": minillama.load(d, "torch", device="cpu")}
    cfg = models["numpy"].cfg
    n_params = sum(p.numel() for p in hf.parameters())
    per_token = sum(a.nbytes for n, a in models["numpy"].w.items() if n != "tok_embeddings") + cfg.dim * 4   # one row
    bw_before = read_bandwidth()

    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, size=a.prompt)
    rows = {}
    for name, m in models.items():
        t_pre = best_time(lambda: m.forward(ids, last_only=True))
        def decode(n):
            return lambda: list(m.generate(ids[:16], max_new_tokens=n, temperature=0))
        t_dec = (best_time(decode(a.decode + 1), 2) - best_time(decode(1), 2)) / a.decode
        rows[name] = (a.prompt / t_pre, 1 / t_dec)
    tid = torch.as_tensor(ids)[None]
    with torch.no_grad():
        t_pre = best_time(lambda: hf(tid, use_cache=False, logits_to_keep=1))
        gen = lambda n: lambda: hf.generate(tid[:, :16], max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
        t_dec = (best_time(gen(a.decode + 1), 2) - best_time(gen(1), 2)) / a.decode
    rows["transformers"] = (a.prompt / t_pre, 1 / t_dec)
    if have_cpp: rows["llama.cpp"] = llama_cpp_on(d, ids, a.decode)

    # the bandwidth is measured before and after the timings and the best kept: a low reading (a noisy neighbour, page
    # cache churn) would lower the bound and flatter every ratio below
    bw = max(bw_before, read_bandwidth())
    bound = bw / per_token
    print(f"model: {n_params/1e6:.0f}M parameters, {per_token/2**20:.0f} MiB of weights read per token (float32); "
          f"read bandwidth {bw/1e9:.1f} GB/s on {os.cpu_count()} cores (best of before/after) -> decode bound {bound:.1f} tokens/s")
    ref = "llama.cpp" if "llama.cpp" in rows else "transformers"
    ref_pre, ref_dec = rows[ref]
    print(f"\n{'implementation':14s} {'prefill tok/s':>14s} {'vs ' + ref:>16s} {'decode tok/s':>13s} {'vs ' + ref:>16s} "
          f"{'of bound':>9s}")
    for name, (pre, dec) in rows.items():
        print(f"{name:14s} {pre:14.1f} {pre/ref_pre:15.2f}x {dec:13.2f} {dec/ref_dec:15.2f}x {dec/bound:8.0%}")
    print(f"{'bound':14s} {'':14s} {'':16s} {bound:13.2f} {'':16s} {1:8.0%}")


if __name__ == "__main__":
    main()
