"""Layer-by-layer streaming on a model bigger than the memory it is given: peak memory and speed against the disk bound.

Builds a random float32 Llama GGUF of about 1.8 GB (14 layers of 100 MB, a 32000 x 1536 output matrix), then, each run
in a fresh process with the page cache dropped before every pass:
  1. peak resident memory (VmHWM) streamed and in memory, and the streamed logits against the in-memory ones;
  2. decode tokens/s with prefetch on and off, for batches of B = 1, 2, 4, 8 prompts sharing each layer read,
     against the bound B x disk read bandwidth / bytes per token (bandwidth measured here, best of 3 cold reads).
Usage: python benchmarks/bench_stream.py [--dir /var/tmp] [--backends numpy torch] [--steps 3]
"""
import argparse, shutil, tempfile
from pathlib import Path
import numpy as np
from minillama.core import assert_close
from minillama.stream import big_random_gguf, disk_read_bandwidth, load_streamed, stream_probe


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--backends", nargs="+", default=["numpy", "torch"])
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(dir=a.dir))
    try:
        big = big_random_gguf(d / "big.gguf")
        size = big.stat().st_size
        per_token = load_streamed(big).streamer.bytes_per_token
        bw = disk_read_bandwidth(big)
        bound = bw / per_token
        print(f"model file {size / 1e9:.2f} GB; {per_token / 1e9:.2f} GB read per pass; disk {bw / 1e9:.2f} GB/s "
              f"(best of 3 cold reads) -> bound {bound:.2f} tok/s per prompt\n")
        print(f"{'backend':8s} {'mode':7s} {'peak RSS MiB':>13s} {'of file':>8s} {'logits worst |Δ|':>17s}")
        for be in a.backends:
            ref = stream_probe(big, be, "memory", steps=1, logits_out=d / "ref.npy")
            s = stream_probe(big, be, "stream", steps=1, logits_out=d / "s.npy")
            r = assert_close(np.load(d / "s.npy"), np.load(d / "ref.npy"), "float32", what=f"{be} streamed vs in memory")
            for mode, x, w in (("memory", ref, "(reference)"), ("stream", s, f"{r['worst']:.2g}")):
                print(f"{be:8s} {mode:7s} {x['peak_rss'] / 2**20:13.0f} {x['peak_rss'] / size:8.1%} {w:>17s}")
        print(f"\n{'backend':8s} {'prefetch':8s} {'batch':>5s} {'tok/s':>7s} {'bound':>7s} {'of bound':>9s} {'vs B=1':>7s} "
              f"{'wait for reads':>15s}")
        for be in a.backends:
            for prefetch in (True, False):
                base = None
                for B in (1, 2, 4, 8):
                    r = stream_probe(big, be, "stream", prefetch, batch=B, steps=a.steps)
                    tps = B / np.median(r["step_s"])
                    base = base or tps
                    wait = r["wait_s"] / (r["prefill_s"] + sum(r["step_s"]))
                    print(f"{be:8s} {str(prefetch):8s} {B:5d} {tps:7.2f} {B * bound:7.2f} {tps / (B * bound):9.0%} "
                          f"{tps / base:6.1f}x {wait:14.0%}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
