"""Decode speed and resident memory of F32, Q8_0 and Q4_0 on the ~220M random Llama, numpy and torch backends.

Each row runs in a fresh process: load the GGUF (mapped), prefill 16 tokens, time 32 decode steps, then read resident
memory (anonymous and file-backed) from /proc/self/smaps_rollup; "model" is the growth of RSS from just before the load
(the interpreter and the imported code excluded). torch runs three ways: the default (float32 activations; quantized
matrices through torch's int4 weight-only kernel in bfloat16, the fast one), dtype="float32" asked for (every kernel
in float32: exact, within 1e-5 of numpy, and slow on quantized files) and dtype="bfloat16". "vs F32" compares with the
F32 file on the same backend and dtype. The bound is the read bandwidth (all cores, measured here) divided by the bytes
of weights each type reads per token. Usage: python benchmarks/bench_quant.py [--dir /var/tmp]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile
from pathlib import Path
import numpy as np

PROBE = r'''
import json, sys, time, numpy as np
from minillama.memory import smaps_rollup
path, backend, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
if backend == "torch":
    import torch; torch.set_num_threads(2)
import minillama, minillama.gguf, minillama.quant_kernels
base = smaps_rollup()["Rss"]                                       # the interpreter and the code, before the model
m = minillama.load(path, backend, device="cpu" if backend == "torch" else None, dtype=None if dtype == "-" else dtype)
ids = np.arange(16)
gen = lambda n: list(m.generate(ids, max_new_tokens=n, temperature=0))
gen(2)
t = time.perf_counter(); gen(1); t1 = time.perf_counter() - t
t = time.perf_counter(); gen(33); t33 = time.perf_counter() - t
s = smaps_rollup()
print(json.dumps(dict(tok_s=32 / (t33 - t1), rss=s["Rss"], anon=s["Anonymous"], model=s["Rss"] - base)))
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp")
    a = ap.parse_args()
    try: import llama_cpp  # noqa: F401
    except ImportError: print("llama-cpp-python is not installed here: no llama.cpp reference in this run, so no ratio "
                              "to llama.cpp (pip install llama-cpp-python compiles it, about 8 minutes)")
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_forward import read_bandwidth
    from minillama.model import LlamaConfig
    from minillama.gguf import GGUFFile
    from minillama.gguf_llama import write_random_gguf
    from minillama.quantize import quantize_gguf
    d = Path(tempfile.mkdtemp(dir=a.dir))
    try:
        cfg = LlamaConfig(dim=1024, n_layers=12, n_heads=16, n_kv_heads=16, vocab_size=32000, hidden_dim=2816, max_seq_len=512)
        files = {"F32": write_random_gguf(d / "f32.gguf", cfg)}
        for qt in ("q8_0", "q4_0"):
            files[qt.upper()] = quantize_gguf(files["F32"], d / f"{qt}.gguf", qt, progress=False)
        bw = read_bandwidth()
        print(f"read bandwidth {bw/1e9:.1f} GB/s on {os.cpu_count()} cores\n")
        print(f"{'type':5s} {'file MiB':>9s} {'bytes/token MiB':>16s} {'bound tok/s':>12s} {'backend':16s} {'tok/s':>7s} "
              f"{'of bound':>9s} {'vs F32':>7s} {'RSS MiB':>8s} {'model MiB':>10s} {'model vs F32':>13s}")
        ref = {}
        for t, f in files.items():
            g = GGUFFile(f)
            per_token = sum(i["nbytes"] for k, i in g.tensors.items() if k != "token_embd.weight")
            for be, dt in (("numpy", "-"), ("torch", "-"), ("torch", "float32"), ("torch", "bfloat16")):
                r = json.loads(subprocess.run([sys.executable, "-c", PROBE, str(f), be, dt], capture_output=True, text=True,
                                              check=True).stdout.strip().splitlines()[-1])
                bound = bw / per_token
                ref.setdefault((be, dt), r)
                name = be + (" (default)" if dt == "-" and be == "torch" else "" if dt == "-" else f" {dt}")
                print(f"{t:5s} {f.stat().st_size/2**20:9.0f} {per_token/2**20:16.0f} {bound:12.1f} {name:16s} {r['tok_s']:7.2f} "
                      f"{r['tok_s']/bound:8.0%} {r['tok_s']/ref[be, dt]['tok_s']:6.2f}x {r['rss']/2**20:8.0f} "
                      f"{r['model']/2**20:10.0f} {r['model']/ref[be, dt]['model']:12.2f}x")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
