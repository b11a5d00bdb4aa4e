"""Where a decode step's time goes: the matrix products against everything else (norms, RoPE, attention, the cache,
the Python between them), numpy and torch on the same GGUF files of the ~220M random Llama of bench_quant.py.

Each row runs in a fresh process (minillama imported before torch): load the file, prefill a 64-token prompt, then time
decode steps in 8 rounds of 8, noting the time spent inside the products: `linear_np` on numpy (OpenBLAS, or a quantized
matrix's chunks dequantized and multiplied), the kernels of `CPU_LINEARS` on torch (the C kernels, their checks
included). "rest" is the step minus the products. "torch calls" counts the calls torch sees in one step (ops, views and
attribute reads, through a TorchFunctionMode): on the CPU each of them pays again for the caches the product before it
has swept. With --repeat N the rows take turns N times and each number is the median. For numbers against llama.cpp, see
bench_quant.py; this script explains them.
Usage: python benchmarks/bench_decode_split.py [--dir /var/tmp] [--repeat 3] [--types F32,Q8_0,Q4_0]
"""
import argparse, json, shutil, statistics, subprocess, sys, tempfile
from pathlib import Path

PROBE = r'''
import json, statistics, sys, time, numpy as np
import minillama, minillama.mlp_norm as mn, minillama.model as mm, minillama.quant_kernels as qk
path, backend = sys.argv[1], sys.argv[2]
if backend == "torch":
    import torch; torch.set_num_threads(__import__("os").cpu_count())
m = minillama.load(path, backend, device="cpu" if backend == "torch" else None)
inside = [0.0]
def timed(f):
    def g(*a, **k):
        t = time.perf_counter(); r = f(*a, **k); inside[0] += time.perf_counter() - t; return r
    return g
if backend == "torch": mn.CPU_LINEARS[:] = [timed(f) for f in mn.CPU_LINEARS]   # linear_torch asks them first
else:                    # the model and the MLP call it by name; a quantized weight's chunks are inside its call
    mn.linear_np = mm.linear_np = timed(mn.linear_np)
cache = m.new_cache(max_len=256)
m.forward(np.random.default_rng(0).integers(1, m.cfg.vocab_size, 64), cache=cache, last_only=True)
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
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_quant import model_files
    d = Path(tempfile.mkdtemp(dir=a.dir))
    try:
        files = model_files(d, a.types.split(","))
        print(f"decode steps after a 64-token prompt, ms per step (medians of {a.repeat} run(s), rows taking turns)")
        print(f"{'type':5s} {'backend':7s} {'step':>7s} {'products':>9s} {'rest':>7s} {'tok/s':>7s} {'torch calls':>12s}")
        for t, f in files.items():
            runs = {}
            for _ in range(a.repeat):
                for be in ("numpy", "torch"):
                    r = subprocess.run([sys.executable, "-c", PROBE, str(f), be], capture_output=True, text=True)
                    if r.returncode: raise SystemExit(f"{be} on {f.name} failed:\n{r.stderr[-2000:]}")
                    runs.setdefault(be, []).append(json.loads(r.stdout.strip().splitlines()[-1]))
            for be, rs in runs.items():
                s, p = (statistics.median(r[k] for r in rs) for k in ("step", "products"))
                calls = f"{rs[0]['calls']:12d}" if be == "torch" else f"{'':12s}"
                print(f"{t:5s} {be:7s} {s*1e3:7.1f} {p*1e3:9.1f} {(s-p)*1e3:7.1f} {1/s:7.1f} {calls}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
