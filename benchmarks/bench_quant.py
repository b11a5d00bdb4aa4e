"""Load time, prefill and decode speed, and resident memory of F32, Q8_0 and Q4_0 on the ~220M random Llama: numpy,
torch and llama.cpp on the same GGUF files. One table per type. Each row runs in a fresh process: load the GGUF
(mapped; "load s" is that call, warm page cache), prefill a 64-token prompt (best of two), time 32 greedy decode
steps after it, then read resident memory from /proc/self/smaps_rollup ("model" is the growth of RSS from just
before the load: the interpreter and the imported code excluded; "anon" the growth of anonymous memory alone,
without the file's mapped pages, which the kernel can reclaim). torch runs three ways: the default (float32
activations; Q8_0 and Q4_0 matrices read as stored by the C kernels with activations quantized to int8, other types
through torch's int4 weight-only kernel in bfloat16: the fast mode), dtype="float32" asked for (every kernel in
float32: the exact mode, within 1e-5 of numpy) and dtype="bfloat16"; "torch int4" is the default with the C kernels
turned off (MINILLAMA_NATIVE=0), as on a machine without a C compiler.
llama.cpp is llama-cpp-python with as many threads as cores; where it is not installed a line says so and the ratio
column stays empty. "of bound" is decode speed over the bound: read bandwidth (all cores, measured in this run) /
bytes of weights read per token. "vs F32" compares with the F32 file on the same backend. With --repeat N every row
runs N times, the rows of a table taking turns (so a slow spell of a shared machine falls on all of them), and each
number is the median of its N runs; "decode range" then gives the slowest and fastest of them.
Usage: python benchmarks/bench_quant.py [--dir /var/tmp] [--repeat 3] [--types F32,Q8_0,Q4_0]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile
from pathlib import Path

PROMPT, DECODE = 64, 32

PROBE = r'''
import json, sys, time, numpy as np
from minillama.memory import smaps_rollup
path, backend, dtype, P, D = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
import minillama, minillama.gguf, minillama.quant_kernels        # before torch, as the README asks (OMP_WAIT_POLICY)
if backend == "torch":
    import torch; torch.set_num_threads(__import__("os").cpu_count())
base = smaps_rollup()                                              # the interpreter and the code, before the model
t = time.perf_counter()
m = minillama.load(path, backend, device="cpu" if backend == "torch" else None, dtype=None if dtype == "-" else dtype)
load = time.perf_counter() - t
ids = np.random.default_rng(0).integers(1, m.cfg.vocab_size, P)
gen = lambda n: list(m.generate(ids, max_new_tokens=n, temperature=0))
gen(2)
pre = []
for _ in range(2):
    t = time.perf_counter(); m.forward(ids, last_only=True); pre.append(time.perf_counter() - t)
dec = []
for _ in range(2):
    t = time.perf_counter(); gen(1); t1 = time.perf_counter() - t
    t = time.perf_counter(); gen(D + 1); dec.append(time.perf_counter() - t - t1)
s = smaps_rollup()
print(json.dumps(dict(load=load, prefill=P / min(pre), decode=D / min(dec), rss=s["Rss"], model=s["Rss"] - base["Rss"],
                      anon=s["Anonymous"] - base["Anonymous"])))
'''

LLAMA_CPP_PROBE = r'''
import json, sys, time, numpy as np
from minillama.memory import smaps_rollup
path, P, D = sys.argv[1], int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, sys.argv[6])
from llama_cpp_ref import llama_cpp_model, llama_cpp_speeds
base = smaps_rollup()
t = time.perf_counter(); llm = llama_cpp_model(path); load = time.perf_counter() - t
ids = [int(i) for i in np.random.default_rng(0).integers(1, llm.n_vocab(), P)]
prefill, decode = llama_cpp_speeds(llm, ids, ids, D)               # decode after the whole prompt, as minillama's
s = smaps_rollup()
print(json.dumps(dict(load=load, prefill=prefill, decode=decode, rss=s["Rss"], model=s["Rss"] - base["Rss"],
                      anon=s["Anonymous"] - base["Anonymous"])))
'''

RUNS = [("numpy", "numpy", "-", {}), ("torch (default)", "torch", "-", {}), ("torch float32", "torch", "float32", {}),
        ("torch bfloat16", "torch", "bfloat16", {}), ("torch int4", "torch", "-", {"MINILLAMA_NATIVE": "0"}),
        ("llama.cpp", "llama.cpp", "-", {})]


def model_files(d: Path, types=("F32", "Q8_0", "Q4_0")) -> dict:
    "The ~220M random Llama (dim 1024, 12 layers, vocab 32000) as GGUF files in `d`, one per type (F32 quantized)."
    from minillama.model import LlamaConfig
    from minillama.gguf_llama import write_random_gguf
    from minillama.quantize import quantize_gguf
    cfg = LlamaConfig(dim=1024, n_layers=12, n_heads=16, n_kv_heads=16, vocab_size=32000, hidden_dim=2816,
                      max_seq_len=512)
    f32 = write_random_gguf(d / "f32.gguf", cfg, vocab=True)                      # llama.cpp wants a vocabulary
    return {t: f32 if t == "F32" else quantize_gguf(f32, d / f"{t.lower()}.gguf", t.lower(), progress=False)
            for t in types}


def run(probe, f, backend, dtype, env):
    r = subprocess.run([sys.executable, "-c", probe, str(f), backend, dtype, str(PROMPT), str(DECODE),
                        str(Path(__file__).parent)],
                       capture_output=True, text=True, env={**os.environ, **env})
    if r.returncode: raise SystemExit(f"{backend} {dtype} on {f.name} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row, in turns; the table shows their medians")
    ap.add_argument("--types", default="F32,Q8_0,Q4_0", help="the files to time (\"vs F32\" needs F32 among them)")
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from llama_cpp_ref import llama_cpp_installed
    have_cpp = llama_cpp_installed()
    from bench_forward import read_bandwidth
    from minillama.gguf import GGUFFile
    d = Path(tempfile.mkdtemp(dir=a.dir))
    try:
        files = model_files(d, a.types.split(","))
        bw = read_bandwidth()
        print(f"read bandwidth {bw/1e9:.1f} GB/s on {os.cpu_count()} cores; prompt {PROMPT} tokens, decode {DECODE}")
        f32 = {}
        for t, f in files.items():
            g = GGUFFile(f)
            per_token = sum(i["nbytes"] for k, i in g.tensors.items() if k != "token_embd.weight")
            bound = bw / per_token
            print(f"\n{t}: file {f.stat().st_size/2**20:.0f} MiB, {per_token/2**20:.0f} MiB of weights per token, "
                  f"decode bound {bound:.1f} tok/s")
            print(f"{'backend':16s} {'load s':>7s} {'prefill tok/s':>14s} {'vs llama.cpp':>13s} {'decode tok/s':>13s} "
                  f"{'vs llama.cpp':>13s} {'of bound':>9s} {'vs F32':>7s} {'RSS MiB':>8s} {'model MiB':>10s} "
                  f"{'anon MiB':>9s}" + (f" {'decode range':>14s}" if a.repeat > 1 else ""))
            runs = {}
            for _ in range(a.repeat):
                for name, be, dt, env in RUNS:
                    if be == "llama.cpp" and not have_cpp: continue
                    probe = LLAMA_CPP_PROBE if be == "llama.cpp" else PROBE
                    runs.setdefault(name, []).append(run(probe, f, be, dt, env))
            rows = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
            ref = rows.get("llama.cpp")
            for name, r in rows.items():
                if "F32" in files: f32.setdefault(name, r)
                vs = lambda k: f"{r[k] / ref[k]:.2f}x" if ref else ""
                print(f"{name:16s} {r['load']:7.2f} {r['prefill']:14.1f} {vs('prefill'):>13s} {r['decode']:13.2f} "
                      f"{vs('decode'):>13s} "
                      f"{r['decode']/bound:8.0%} "
                      + (f"{r['decode']/f32[name]['decode']:6.2f}x " if f32 else f"{'':7s} ") +
                      f"{r['rss']/2**20:8.0f} "
                      f"{r['model']/2**20:10.0f} {r['anon']/2**20:9.0f}"
                      + (f" {min(x['decode'] for x in runs[name]):6.1f}–{max(x['decode'] for x in runs[name]):<6.1f}"
                         if a.repeat > 1 else ""))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
