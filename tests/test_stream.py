"""Layer-by-layer streaming: same logits as the in-memory model, bounded memory, page cache dropped, clear errors."""
import json, os, shutil, subprocess, sys
import numpy as np
import pytest
import minillama
from minillama.core import MiniLlamaError, assert_close
from minillama.model import LlamaConfig, random_weights
from minillama.gguf_llama import write_random_gguf
from minillama.checkpoint import save_safetensors, hf_name
from minillama.quantize import quantize_gguf
from minillama.memory import evict, resident
from minillama.stream import load_streamed, stream_probe, kv_cache_bytes, read_into, LLAMA2_SIZES
from minillama.cli import main, shipped_model

CFG = LlamaConfig(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=2000, hidden_dim=160, max_seq_len=64)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    w = random_weights(CFG, seed=3)
    write_random_gguf(d / "m.gguf", CFG, seed=3)                          # the same weights as `w`
    quantize_gguf(d / "m.gguf", d / "q8.gguf", "q8_0", progress=False)
    (d / "hf").mkdir()
    save_safetensors(d / "hf" / "model.safetensors", {hf_name(n): a for n, a in w.items()})
    (d / "hf" / "config.json").write_text(json.dumps(dict(model_type="llama", hidden_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=2000, intermediate_size=160, max_position_embeddings=64,
        rms_norm_eps=1e-5)))
    return d


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", ["m.gguf", "q8.gguf", "hf"])
@pytest.mark.parametrize("prefetch", [True, False])
def test_streamed_equals_in_memory(files, backend, name, prefetch):
    ref = minillama.load(files / name, backend, device="cpu" if backend == "torch" else None)
    m = minillama.load(files / name, backend, device="cpu" if backend == "torch" else None, stream=True, prefetch=prefetch)
    assert len(m.streamer.units) == CFG.n_layers + 3                 # the output matrix comes in 3 chunks
    ids = np.array([[1, 1500, 7, 99, 3], [4, 5, 6, 1999, 0]])       # a batch of two prompts
    c1, c2 = ref.new_cache(2), m.new_cache(2)
    assert_close(m.forward(ids, c2), ref.forward(ids, c1), "float32", what=f"{name} {backend} prompt")
    for pos, t in enumerate([[8], [9]], 5):
        assert_close(m.forward(np.array([t, t]), c2, pos), ref.forward(np.array([t, t]), c1, pos), "float32",
                     what=f"{name} {backend} step {pos}")
    assert list(m.generate([1, 2, 3], 6, temperature=0)) == list(ref.generate([1, 2, 3], 6, temperature=0))


@pytest.mark.parametrize("prefetch", [True, False])
def test_streamed_quantized_prompt_dequantized_from_the_ring(files, prefetch):
    "60 rows x 2 planes of Q8_0 take the dequantized road, which reads the blocks from the ring's buffer while in use."
    ref = minillama.load(files / "q8.gguf", "torch", device="cpu")
    m = minillama.load(files / "q8.gguf", "torch", device="cpu", stream=True, prefetch=prefetch)
    ids = np.random.default_rng(0).integers(0, CFG.vocab_size, (2, 30))
    assert_close(m.forward(ids), ref.forward(ids), "float32", what=f"streamed Q8_0, 2 x 30 tokens, prefetch={prefetch}")


def test_ring_of_two_buffers_and_bytes_read(files):
    m = load_streamed(files / "m.gguf")
    for _ in range(3): m.forward([1, 2, 3])
    st = m.streamer
    assert len(st.bufs) == 2 and st.stats["passes"] == 3
    assert st.unit_bytes * 2 < 0.5 * (files / "m.gguf").stat().st_size      # the ring is much smaller than the file
    assert st.stats["read_bytes"] >= 3 * m.streamer.bytes_per_token and st.stats["read_bytes"] < 3 * m.streamer.bytes_per_token * 1.01


def test_page_cache_dropped_after_use(files):
    from minillama.memory import PAGE
    path = files / "m.gguf"
    evict(path)
    ref = np.memmap(path, np.uint8, "r")
    with open(path, "rb") as f: f.read()                              # every page cached
    assert resident(ref).mean() > 0.99
    m = load_streamed(path)
    m.forward([1, 2, 3])
    inside = np.zeros(len(resident(ref)), bool)                       # pages wholly inside a streamed tensor
    for u in m.streamer.units:
        for s in u: inside[-(-s.offset // PAGE):(s.offset + s.nbytes) // PAGE] = True
    res = resident(ref)
    print(f"streamed pages still cached: {res[inside].mean():.1%}; other pages (header, embeddings): {res[~inside].mean():.1%}")
    assert inside.mean() > 0.5 and not res[inside].any()
    load_streamed(path, drop_cache=False).forward([1, 2, 3])
    assert resident(ref).mean() > 0.99                                # without drop_cache the pages stay


def test_memory_budget(files):
    with pytest.raises(MiniLlamaError, match=r"m.gguf: memory budget 0.1 MiB is smaller than one layer \(0.2 MiB\)"):
        load_streamed(files / "m.gguf", memory_budget=100_000)
    with pytest.raises(MiniLlamaError, match="holds one layer of 0.2 MiB but not two; prefetch needs 0.3 MiB"):
        load_streamed(files / "m.gguf", memory_budget=200_000, prefetch=True)
    m = load_streamed(files / "m.gguf", memory_budget=200_000)
    assert not m.streamer.prefetch and len(m.streamer.bufs) == 1
    assert load_streamed(files / "m.gguf", memory_budget=400_000).streamer.prefetch
    with pytest.raises(MiniLlamaError, match="only with stream=True"):
        minillama.load(files / "m.gguf", memory_budget=10)


def test_file_changed_or_short(files, tmp_path):
    p = tmp_path / "c.gguf"
    shutil.copy(files / "m.gguf", p)
    m = load_streamed(p)
    m.forward([1, 2])
    os.truncate(p, p.stat().st_size // 2)
    with pytest.raises(MiniLlamaError, match=r"c.gguf: the file changed while streaming \(\d+ bytes when opened, \d+ now\)"):
        m.forward([1, 2])
    fd = os.open(p, os.O_RDONLY)
    try:
        with pytest.raises(MiniLlamaError, match="c.gguf: file ends at byte .* it shrank while streaming"):
            read_into(fd, np.empty(1000, np.uint8), p.stat().st_size - 10, p)
    finally: os.close(fd)


def test_kv_cache_formula():
    c = LLAMA2_SIZES["7B"]
    assert kv_cache_bytes(c) == 2 * 32 * 32 * 128 * 4096 * 2 == 2_147_483_648
    assert kv_cache_bytes(LLAMA2_SIZES["70B"]) < kv_cache_bytes(LLAMA2_SIZES["13B"])      # grouped-query attention
    m = minillama.Llama(CFG, random_weights(CFG))
    assert m.new_cache(3).nbytes == kv_cache_bytes(CFG, bytes_per=4, batch=3)


def test_peak_memory_bounded(tmp_path):
    "A 190 MB model streamed in a fresh process: its peak RSS grows by under 30% of the file over the bare interpreter."
    c = LlamaConfig(dim=512, n_layers=12, n_heads=8, n_kv_heads=4, vocab_size=8000, hidden_dim=1536, max_seq_len=64)
    p = tmp_path / "big.gguf"
    write_random_gguf(p, c)
    base = subprocess.run([sys.executable, "-c", "import minillama, minillama.stream; from minillama.memory import peak_rss; "
                           "print(peak_rss())"], capture_output=True, text=True, check=True)
    base = int(base.stdout.strip())
    size = p.stat().st_size
    s = stream_probe(p, "numpy", "stream", steps=2, logits_out=tmp_path / "s.npy")
    r = stream_probe(p, "numpy", "memory", steps=2, logits_out=tmp_path / "r.npy")
    grow_s, grow_r = s["peak_rss"] - base, r["peak_rss"] - base
    print(f"file {size / 2**20:.0f} MiB; peak RSS over the interpreter: streamed {grow_s / 2**20:.0f} MiB "
          f"({grow_s / size:.0%}), in memory {grow_r / 2**20:.0f} MiB ({grow_r / size:.0%})")
    assert grow_s < 0.3 * size and grow_r > 0.8 * size
    assert_close(np.load(tmp_path / "s.npy"), np.load(tmp_path / "r.npy"), "float32", what="streamed vs in memory")


def test_cli_stream_layers(capsys):
    args = ["generate", "The \"for\" statement", "--seed", "0", "--max-new-tokens", "12"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main(args + ["--stream-layers"]) == 0
    assert capsys.readouterr().out == plain and len(plain) > 30
    assert main(args + ["--stream-layers", "--memory-budget", "1M"]) == 1
    err = capsys.readouterr().err
    assert "memory budget 1.0 MiB is smaller than one layer (2.6 MiB)" in err and str(shipped_model()) in err


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_streaming(files):
    "On a GPU: pinned host buffers, copies on a side stream; logits equal the in-memory model's."
    ref = minillama.load(files / "m.gguf", "torch", device="cuda")
    m = minillama.load(files / "m.gguf", "torch", device="cuda", stream=True)
    assert m.streamer.cuda and m.streamer.copy_stream is not None
    ids = np.array([1, 1500, 7, 99, 3])
    c1, c2 = ref.new_cache(), m.new_cache()
    assert_close(m.forward(ids, c2), ref.forward(ids, c1), "float32", what="cuda streamed prompt")
    for pos in range(5, 9):
        assert_close(m.forward([pos], c2, pos), ref.forward([pos], c1, pos), "float32", what=f"cuda step {pos}")


def test_shard_layers(tmp_path, capsys, monkeypatch):
    "One safetensors file per layer (AirLLM's layout): the same model in memory and streamed; atomic; no overwrite."
    dst = tmp_path / "per_layer"
    assert main(["convert", str(shipped_model()), str(dst), "--shard-layers"]) == 0
    cfg = minillama.load(shipped_model()).cfg
    assert sorted(p.name for p in dst.glob("layer-*.safetensors")) == [f"layer-{i:03d}.safetensors" for i in range(cfg.n_layers)]
    assert (dst / "tokenizer.model").is_file() and (dst / "model.safetensors.index.json").is_file()
    ids = np.arange(1, 40)
    ref = minillama.load(shipped_model()).forward(ids)
    assert_close(minillama.load(dst).forward(ids), ref, "float32", what="per-layer shards in memory")
    m = minillama.load(dst, stream=True)
    assert_close(m.forward(ids), ref, "float32", what="per-layer shards streamed")
    assert all(len({s.path for s in u}) == 1 for u in m.streamer.units)              # a layer is one file
    capsys.readouterr()
    args = ["generate", "The \"for\" statement", "--seed", "0", "--max-new-tokens", "12"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main(args + ["--model", str(dst), "--stream-layers"]) == 0 and capsys.readouterr().out == plain
    assert main(["convert", str(shipped_model()), str(dst), "--shard-layers"]) == 1
    assert "per_layer: already exists" in capsys.readouterr().err
    import minillama.stream as ckpt                                  # where shard_layers looks the writer up
    calls = []
    real = ckpt.save_safetensors
    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 3: raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(ckpt, "save_safetensors", failing)
    with pytest.raises(KeyboardInterrupt):
        minillama.stream.shard_layers(shipped_model(), tmp_path / "half", progress=False)
    assert not (tmp_path / "half").exists() and not (tmp_path / "half.tmp").exists()


def test_copied_weights_leave_the_map(tmp_path):
    "Weights copied at load (torch bfloat16 here) do not keep the file's pages resident; float32 views do."
    from minillama.memory import smaps_rollup, evict
    c = LlamaConfig(dim=256, n_layers=4, n_heads=4, n_kv_heads=4, vocab_size=8000, hidden_dim=1024, max_seq_len=64)
    p = tmp_path / "w.gguf"
    write_random_gguf(p, c)
    size = p.stat().st_size
    file_rss = lambda: (lambda s: s["Rss"] - s["Anonymous"])(smaps_rollup())
    evict(p)
    r0 = file_rss()
    m = minillama.load(p, "torch", device="cpu", dtype="bfloat16")
    grew = file_rss() - r0
    m.forward([1, 2, 3])
    print(f"{size / 2**20:.0f} MiB file; file-backed RSS after a bfloat16 load grew by {grew / 2**20:.1f} MiB")
    assert grew < 0.1 * size
    m32 = minillama.load(p, "torch", device="cpu")
    m32.forward([1, 2, 3])                    # float32: the weights are the map itself, touched (all but 3 embedding rows)
    assert file_rss() - r0 > 0.6 * size


def test_interrupted_pass_is_cleaned_up(files):
    "A forward interrupted between layers leaves no stuck reader: the next pass closes it and gives the right logits."
    m, ref = load_streamed(files / "m.gguf"), minillama.load(files / "m.gguf")
    def boom(name, x):
        if name == "block.1": raise KeyboardInterrupt
    for _ in range(3):
        with pytest.raises(KeyboardInterrupt): m.forward([1, 2, 3], trace=boom)
    p = m.streamer.current                                               # only the last interrupted pass is open
    assert p is not None and p.thread.is_alive()
    assert_close(m.forward([1, 2, 3]), ref.forward([1, 2, 3]), "float32", what="after interrupted passes")
    assert not p.thread.is_alive()
    assert m.streamer.current is None                                    # a finished pass closes its reader
