"""Where a prompt should leave the C kernels for the dequantized road (`NATIVE_ROWS`, and `AVX512_ROWS` for the AVX-512
kernels, in notebook 16): prefill tok/s of Q8_0 and Q4_0 on torch (default mode, CPU) through the C kernels (int8 x)
and through one dequantization per matrix and a float32 GEMM, prompts of several lengths, on the ~220M random Llama of
bench_quant.py. Both roads run in the same process, taking turns; each number is the best of --repeat runs.
"C / dequantized" above 1 means the C kernels should keep prompts of that length. With MINILLAMA_NATIVE=noavx512 in
the environment it measures the kernels a CPU without AVX-512 gets (`NATIVE_ROWS`) on one that has it.
Usage: python benchmarks/bench_prompt_roads.py [--dir /var/tmp] [--repeat 3] [--lengths 32,64,128,256]
"""
import argparse, shutil, sys, tempfile, time
from pathlib import Path

import minillama                          # before torch, as the README asks (OMP_WAIT_POLICY)
import minillama.quant_kernels as qk
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lengths", default="32,64,128,256")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(__import__("os").cpu_count())
    if not qk.native(): raise SystemExit("no C kernels here (no compiler, or MINILLAMA_NATIVE=0): nothing to compare")
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_quant import model_files
    d = Path(tempfile.mkdtemp(dir=a.dir))
    roads, keep = {"C": 10**9, "dequantized": 0}, (qk.NATIVE_ROWS, dict(qk.AVX512_ROWS))
    try:
        files = model_files(d, ["Q8_0", "Q4_0"])
        avx512, q8, q4 = bool(qk.native().avx512_kernels()), qk.native_rows("q8_0_q8"), qk.native_rows("q4_0_q8")
        print(f"prefill tok/s on torch (CPU), best of {a.repeat}; AVX-512 kernels: {avx512}; prompts leave the C "
              f"kernels from {q8} rows (Q8_0) and {q4} (Q4_0)")
        print(f"{'type':5s} {'tokens':>6s} {'C':>8s} {'dequantized':>12s} {'C / dequantized':>16s}")
        for t, f in files.items():
            m = minillama.load(f, "torch", device="cpu")
            for P in map(int, a.lengths.split(",")):
                ids = np.random.default_rng(0).integers(1, m.cfg.vocab_size, P)
                best = {}
                for i in range(a.repeat + 1):                                       # round 0 warms up
                    for road, rows in roads.items():
                        qk.NATIVE_ROWS = rows; qk.AVX512_ROWS.update(dict.fromkeys(qk.AVX512_ROWS, rows))
                        s = time.perf_counter(); m.forward(ids, last_only=True); s = time.perf_counter() - s
                        if i: best[road] = min(best.get(road, s), s)
                c, dq = P / best["C"], P / best["dequantized"]
                print(f"{t:5s} {P:6d} {c:8.1f} {dq:12.1f} {c / dq:15.2f}x")
    finally:
        qk.NATIVE_ROWS = keep[0]; qk.AVX512_ROWS.update(keep[1])
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
