"""Where a decode step's time goes, or with --prefill a prompt's: the matrix products against everything else (norms,
RoPE, attention, the cache, the Python between them), numpy and torch on the same GGUF files of the ~220M random Llama of
bench_quant.py.

Each row runs in a fresh process (minillama imported before torch): load the file, prefill a 64-token prompt, then time
decode steps in 8 rounds of 8, noting the time spent inside the products: `linear_np` on numpy (OpenBLAS, or a quantized
matrix's chunks dequantized and multiplied), the kernels of `CPU_LINEARS` on torch (the C kernels, their checks
included). "rest" is the step minus the products. "torch calls" counts the calls torch sees in one step (ops, views and
attribute reads, through a TorchFunctionMode): on the CPU each of them pays again for the caches the product before it
has swept. With --repeat N the rows take turns N times and each number is the median. For numbers against llama.cpp, see
bench_quant.py; this script explains them.
With --prefill the same split is made of 8 prefills of the 64-token prompt (on torch the products are then all of
`linears_torch`: oneDNN's GEMM for F32 prompts), and llama.cpp (llama-cpp-python, where installed) prefills the same
prompt in the same process, taking turns with ours, each after a pause of 0.3 s for the threads that spin after their
work. "products / llama.cpp" is our products' time over llama.cpp's whole prefill, the median over the rounds: at 1.0 or
more, the products alone already take as long as llama.cpp's prefill.
Usage: python benchmarks/bench_decode_split.py [--dir /var/tmp] [--repeat 3] [--types F32,Q8_0,Q4_0] [--prefill]
"""
import argparse, json, shutil, statistics, subprocess, sys, tempfile
from pathlib import Path

PROBE = r'''
import json, statistics, sys, time, numpy as np
import minillama, minillama.mlp_norm as mn, minillama.model as mm, minillama.quant_kernels as qk
path, backend, prefill = sys.argv[1], sys.argv[2], sys.argv[3] == "prefill"
if backend == "torch":
    import torch; torch.set_num_threads(__import__("os").cpu_count())
m = minillama.load(path, backend, device="cpu" if backend == "torch" else None)
inside = [0.0]
def timed(f):
    def g(*a, **k):
        t = time.perf_counter(); r = f(*a, **k); inside[0] += time.perf_counter() - t; return r
    return g
if backend == "torch" and prefill:   # every product of a prompt, whichever kernel takes it (linear_torch calls it too)
    mn.linears_torch = mm.linears_torch = timed(mn.linears_torch)
elif backend == "torch": mn.CPU_LINEARS[:] = [timed(f) for f in mn.CPU_LINEARS]   # linear_torch asks them first
else:                    # the model and the MLP call it by name; a quantized weight's chunks are inside its call
    mn.linear_np = mm.linear_np = timed(mn.linear_np)
ids = np.random.default_rng(0).integers(1, m.cfg.vocab_size, 64)
if prefill:
    sys.path.insert(0, sys.argv[4])
    from llama_cpp_ref import llama_cpp_model
    llm = llama_cpp_model(path)
    def ours():
        inside[0] = 0; t = time.perf_counter(); m.forward(ids, last_only=True)   # no cache, as bench_quant.py
        return time.perf_counter() - t, inside[0]
    def theirs():
        llm.reset(); t = time.perf_counter(); llm.eval([int(i) for i in ids]); return time.perf_counter() - t
    fs = [ours, theirs] if llm else [ours]
    got = {f: [f()] for f in fs}                                    # warm-up, dropped below
    for r in range(8):                                              # taking turns, a pause before each
        for f in (fs if r % 2 else fs[::-1]): time.sleep(0.3); got[f].append(f())
    a, b = got[ours][1:], got.get(theirs, [None])[1:]
    med = statistics.median
    print(json.dumps(dict(step=med(t for t, _ in a), products=med(p for _, p in a), llama=med(b) if llm else None,
                          prod_vs_llama=med(p / t for (_, p), t in zip(a, b)) if llm else None)))
    sys.exit()
cache = m.new_cache(max_len=256)
m.forward(ids, cache=cache, last_only=True)
pos, steps, prods = 64, [], []
step = lambda: m.forward(np.array([5]), cache=cache, start_pos=pos, last_only=True)
for _ in range(4): step(); pos += 1
for _ in range(8):
    inside[0] = 0; t = time.perf_counter()
    for _ in range(8): step(); pos += 1
    steps.append((time.perf_counter() - t) / 8); prods.append(inside[0] / 8)
calls = 0
if backend == "torch":
    from torch.overrides import TorchFunctionMode
    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            global calls; calls += 1
            return func(*args, **(kwargs or {}))
    with Count(): step()
print(json.dumps(dict(step=statistics.median(steps), products=statistics.median(prods), calls=calls)))
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row, in turns; the table shows their medians")
    ap.add_argument("--types", default="F32,Q8_0,Q4_0")
    ap.add_argument("--prefill", action="store_true", help="split 64-token prefills instead, against llama.cpp's")
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if a.prefill:
        from llama_cpp_ref import llama_cpp_installed
        llama_cpp_installed()
    from bench_quant import model_files
    d = Path(tempfile.mkdtemp(dir=a.dir))
    try:
        files = model_files(d, a.types.split(","))
        what = "prefills of 64 tokens, ms per prefill" if a.prefill else "decode steps after a 64-token prompt, ms per step"
        print(f"{what} (medians of {a.repeat} run(s), rows taking turns)")
        last = f"{'llama.cpp':>10s} {'ours vs llama.cpp':>18s} {'products / llama.cpp':>21s}" if a.prefill else \
               f"{'torch calls':>12s}"
        print(f"{'type':5s} {'backend':7s} {'step':>7s} {'products':>9s} {'rest':>7s} {'tok/s':>7s} {last}")
        for t, f in files.items():
            runs = {}
            for _ in range(a.repeat):
                for be in ("numpy", "torch"):
                    r = subprocess.run([sys.executable, "-c", PROBE, str(f), be, "prefill" if a.prefill else "decode",
                                        str(Path(__file__).parent)], capture_output=True, text=True)
                    if r.returncode: raise SystemExit(f"{be} on {f.name} failed:\n{r.stderr[-2000:]}")
                    runs.setdefault(be, []).append(json.loads(r.stdout.strip().splitlines()[-1]))
            for be, rs in runs.items():
                s, p = (statistics.median(r[k] for r in rs) for k in ("step", "products"))
                n = 64 if a.prefill else 1                                       # tokens per timed call
                if not a.prefill: last = f"{rs[0]['calls']:12d}" if be == "torch" else ""
                elif rs[0]["llama"] is None: last = f"{'-':>10s} {'-':>18s} {'-':>21s}"
                else:
                    ll, pl = (statistics.median(r[k] for r in rs) for k in ("llama", "prod_vs_llama"))
                    last = f"{ll*1e3:10.1f} {ll/s:17.2f}x {pl:21.2f}"
                print(f"{t:5s} {be:7s} {s*1e3:7.1f} {p*1e3:9.1f} {(s-p)*1e3:7.1f} {n/s:7.1f} {last}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
