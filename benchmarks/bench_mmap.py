"""Loading by mapping against loading by reading, for GGUF models of 0.25, 0.5, 1 and 2 GiB (random F32 weights).

For each size and each of mmap/read and warm/cold page cache, a fresh process loads the model and runs one token;
the table shows load time, first-token time, anonymous and file-backed memory growth and bytes read from disk
(fractions of the file). Then the madvise/fadvise hints, cold. Targets: warm mmap load >= 20x faster than reading and
flat in size; anonymous growth on load <= 2% of the file with mmap.
Usage: python benchmarks/bench_mmap.py [--sizes 0.25 0.5 1 2] [--dir /var/tmp]   (needs ~4 GiB of disk; files deleted)
"""
import argparse, shutil, tempfile
from pathlib import Path
from minillama.model import LlamaConfig
from minillama.gguf_llama import write_random_gguf
from minillama.memory import probe


def make(path, gib):
    per_layer = 4 * 1024 * 1024 * 4 + 3 * 1024 * 2816 * 4                    # bytes of one layer's matrices (f32)
    emb = 2 * 32000 * 1024 * 4
    n_layers = max(1, round((gib * 2**30 - emb) / per_layer))
    cfg = LlamaConfig(dim=1024, n_layers=n_layers, n_heads=16, n_kv_heads=16, vocab_size=32000, hidden_dim=2816,
                      max_seq_len=512)
    write_random_gguf(path, cfg, vocab=True)                        # a real-sized header: the vocabulary too
    return path.stat().st_size


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1, 2])
    ap.add_argument("--dir", default="/var/tmp", help="where to write the model files (a disk, not tmpfs)")
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(dir=a.dir))
    try:
        print(f"{'GiB':>5s} {'load':5s} {'cache':5s} {'load s':>8s} {'1st tok s':>10s} {'anon@load':>10s} {'file@token':>11s} "
              f"{'disk@load':>10s} {'disk@token':>11s}")
        warm_ratio, adv_rows = {}, {}
        for gib in a.sizes:
            path = d / f"m{gib}.gguf"
            size = make(path, gib)
            r = {(m, c): probe(path, m == "mmap", c) for m in ("mmap", "read") for c in ("warm", "cold")}
            for (m, c), x in r.items():
                print(f"{size/2**30:5.2f} {m:5s} {c:5s} {x['load_s']:8.3f} {x['first_token_s']:10.3f} {x['anon_load']/size:10.1%} "
                      f"{x['file_token']/size:11.1%} {x['read_load']/size:10.1%} {x['read_token']/size:11.1%}")
            warm_ratio[gib] = (r["read", "warm"]["load_s"] / r["mmap", "warm"]["load_s"], r["mmap", "warm"]["load_s"],
                               r["mmap", "warm"]["anon_load"] / size)
            adv_rows[gib] = {h: probe(path, True, "cold", h) for h in ("none", "madv_sequential", "madv_willneed", "fadvise_willneed")}
            path.unlink()
        print(f"\n{'GiB':>5s} {'warm mmap load s':>17s} {'read / mmap':>12s} {'anon growth (mmap)':>19s}")
        for gib, (ratio, t, anon) in warm_ratio.items():
            print(f"{gib:5.2f} {t:17.4f} {ratio:11.0f}x {anon:19.2%}")
        print(f"\ncold start with hints (load + first token, seconds):\n{'GiB':>5s}" + "".join(f"{h:>18s}" for h in adv_rows[a.sizes[0]]))
        for gib, rows in adv_rows.items():
            print(f"{gib:5.2f}" + "".join(f"{x['load_s'] + x['first_token_s']:18.3f}" for x in rows.values()))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
