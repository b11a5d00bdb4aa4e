"GGUF: our reader and writer against llama.cpp's `gguf` package, GGUF models against transformers, and broken files."
import struct
import numpy as np
import pytest
import torch
import gguf

import minillama
from minillama.core import MiniLlamaError, assert_close
from minillama.gguf import GGUFFile, write_gguf, UINT64, INT32, STRING
from minillama.gguf_llama import convert_to_gguf
from minillama.tokenizer import Tokenizer
from minillama.cli import main, shipped_model


def hf_logits(hf, ids):
    with torch.no_grad():
        return hf(torch.as_tensor(ids)[None]).logits[0].numpy()


@pytest.mark.parametrize("style, over", [("llama3", {}), ("llama2", {}), ("llama1", dict(tie_word_embeddings=False)),
                                         ("llama2", dict(head_dim=48, num_attention_heads=4, num_key_value_heads=2))])
def test_converted_gguf_matches_transformers(hf_dir, tmp_path, style, over):
    d, hf = hf_dir(style, **over)
    out = convert_to_gguf(d, tmp_path / "m.gguf", progress=False, no_vocab=True)
    ids = np.random.default_rng(0).integers(0, 512, size=120)
    ref = hf_logits(hf, ids)
    for be in ("numpy", "torch"):
        m = minillama.load(out, be)
        assert m.cfg.rope_layout == "interleaved"
        assert_close(m.forward(ids), ref, what=f"{style} GGUF {be} vs transformers")
    assert_close(minillama.load(convert_to_gguf(d, tmp_path / "h.gguf", "f16", progress=False, no_vocab=True)).forward(ids), ref,
                 dtype="float16", what="F16 GGUF")


def test_gguf_package_reads_what_we_write(hf_dir, tmp_path):
    d, _ = hf_dir("llama3")
    out = convert_to_gguf(d, tmp_path / "m.gguf", progress=False, no_vocab=True)
    r, g = gguf.GGUFReader(out), GGUFFile(out)
    assert set(r.fields) == set(g.metadata) | {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    for k, v in g.metadata.items():
        got = r.fields[k].contents()
        assert (np.asarray(got) == np.asarray(v)).all() if isinstance(v, (list, np.ndarray)) else got == pytest.approx(v), k
    assert {t.name for t in r.tensors} == set(g.tensors) and "rope_freqs.weight" in g.tensors
    for t in r.tensors:
        assert t.tensor_type.name == g.tensors[t.name]["type"]
        assert (np.asarray(t.data).reshape(g.tensors[t.name]["shape"]) == g.tensor(t.name)).all()


def test_we_read_what_gguf_package_writes(tmp_path, rng):
    w = gguf.GGUFWriter(tmp_path / "t.gguf", "llama")
    w.add_uint32("a.u32", 7); w.add_int64("a.i64", -5); w.add_float64("a.f64", 0.25); w.add_bool("a.b", True)
    w.add_string("a.s", "héllo"); w.add_array("a.arr", [1, 2, 3]); w.add_token_list(["x", "▁y"])
    ts = {"f32": rng.normal(size=(3, 64)).astype(np.float32), "f16": rng.normal(size=(2, 2, 32)).astype(np.float16)}
    for k, v in ts.items(): w.add_tensor(k, v)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    g = GGUFFile(tmp_path / "t.gguf")
    assert (g.metadata["a.u32"], g.metadata["a.i64"], g.metadata["a.f64"], g.metadata["a.b"], g.metadata["a.s"]) == (7, -5, 0.25, True, "héllo")
    assert list(g.metadata["a.arr"]) == [1, 2, 3] and g.metadata["tokenizer.ggml.tokens"] == ["x", "▁y"]
    for k, v in ts.items():
        assert g.tensor(k).shape == v.shape and (g.tensor(k) == v).all() and not g.tensor(k).flags.writeable


def test_gguf_carries_its_tokenizer(tmp_path):
    src = shipped_model()
    out = convert_to_gguf(src, tmp_path / "tiny.gguf", progress=False)
    a, b = Tokenizer.from_file(src / "tokenizer.model"), Tokenizer.from_file(out)
    for s in ["The \"for\" statement", "  spaces\tand tabs\n", "émoji 🙂 数字 123", ""]:
        assert a.encode(s, bos=True) == b.encode(s, bos=True) and b.decode(b.encode(s)) == a.decode(a.encode(s))
    ids = np.array(a.encode("Assert statements are", bos=True))
    assert_close(minillama.load(out).forward(ids), minillama.load(src).forward(ids), what="shipped model as GGUF")


def test_cli_convert_and_inspect(tmp_path, capsys):
    assert main(["convert", str(shipped_model()), str(tmp_path / "t.gguf"), "--outtype", "f16"]) == 0
    assert main(["inspect", str(tmp_path / "t.gguf")]) == 0
    out = capsys.readouterr().out
    assert "blk.4.ffn_down.weight" in out and "F16" in out and "llama.block_count" in out
    assert not list(tmp_path.glob("*.tmp"))
    assert main(["convert", str(shipped_model()), str(tmp_path / "t.bin")]) == 1


# --- untrusted files ---------------------------------------------------------------------------------------------

def small_gguf(path):
    write_gguf(path, {"general.architecture": "llama", "k.s": "v", "k.arr": np.arange(5, dtype=np.int32),
                      "k.strs": ["a", "bb"]},
               {"t0": (np.ones((4, 8), np.float32), "F32"), "t1": (np.arange(16, dtype=np.float16), "F16")}, progress=False)
    return path.read_bytes()


def header(kvs, tensors, n_kv=None, n_t=None, version=3):
    "Assemble a GGUF header by hand: kvs [(key, type, packed value)], tensors [(name, dims, type, offset)]."
    s = lambda x: struct.pack("<Q", len(x.encode())) + x.encode()
    b = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_t is None else n_t, len(kvs) if n_kv is None else n_kv)
    for k, t, v in kvs: b += s(k) + struct.pack("<I", t) + v
    for n, dims, t, off in tensors: b += s(n) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", t, off)
    return b + b"\0" * (-len(b) % 32)


ARCH = ("general.architecture", STRING, struct.pack("<Q", 5) + b"llama")

@pytest.mark.parametrize("case, data, must", [
    ("magic", b"GGML" + b"\0" * 40, "magic"),
    ("version", header([], [], version=1) + b"\0" * 8, "version 1"),
    ("dup key", header([ARCH, ARCH], []), "duplicate metadata key"),
    ("dup tensor", header([], [("t", [32], 0, 0), ("t", [32], 0, 128)]) + b"\0" * 256, "duplicate tensor"),
    ("misaligned", header([], [("t", [32], 0, 4)]) + b"\0" * 256, "not a multiple of the alignment"),
    ("past end", header([], [("t", [32], 0, 0)]) + b"\0" * 16, "outside the data section"),
    ("unknown type", header([], [("t", [32], 99, 0)]) + b"\0" * 256, "unknown ggml type 99"),
    ("too many dims", header([], [("t", [2] * 5, 0, 0)]) + b"\0" * 256, "dimensions"),
    ("overflow dims", header([], [("t", [2**62, 2**62], 0, 0)]) + b"\0" * 256, "outside the data section"),
    ("huge string", header([("k", STRING, struct.pack("<Q", 2**62))], []), "needs"),
    ("huge array", header([("k", 9, struct.pack("<IQ", INT32, 2**61))], []), "need"),
    ("huge string array", header([("k", 9, struct.pack("<IQ", STRING, 2**50))], []), "cannot fit"),
    ("bad value type", header([("k", 77, b"")], []) + b"\0" * 64, "unknown value type 77"),
    ("huge counts", b"GGUF" + struct.pack("<IQQ", 3, 2**40, 2**40) + b"\0" * 64, "cannot fit"),
    ("bad alignment", header([("general.alignment", 4, struct.pack("<I", 3))], []), "power of two"),
    ("overlap", header([], [("a", [64], 0, 0), ("b", [64], 0, 128)]) + b"\0" * 512, "overlap"),
    ("block size", header([], [("q", [33], 8, 0)]) + b"\0" * 256, "block"),
])
def test_lying_headers(tmp_path, case, data, must):
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    with pytest.raises(MiniLlamaError) as e:
        GGUFFile(p)
    assert str(p) in str(e.value) and must in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_missing_llama_metadata(tmp_path, hf_dir):
    d, _ = hf_dir("llama2")
    out = convert_to_gguf(d, tmp_path / "m.gguf", progress=False, no_vocab=True)
    g = GGUFFile(out)
    md = {k: (g.types[k], v) if g.types[k] not in (9,) else v for k, v in g.metadata.items() if k != "llama.block_count"}
    tensors = {k: (g.tensor(k), t["type"]) for k, t in g.tensors.items()}
    write_gguf(tmp_path / "n.gguf", md, tensors, progress=False)
    with pytest.raises(MiniLlamaError, match="missing metadata llama.block_count"):
        minillama.load(tmp_path / "n.gguf")
    md["llama.block_count"] = 2; md["general.architecture"] = "gpt2"
    write_gguf(tmp_path / "a.gguf", md, tensors, progress=False)
    with pytest.raises(MiniLlamaError, match="not 'llama'"):
        minillama.load(tmp_path / "a.gguf")


def test_mutations_raise_only_our_error(tmp_path, rng):
    "Truncation at every header byte, thousands of random byte flips and huge length fields: MiniLlamaError or a valid file."
    raw = small_gguf(tmp_path / "s.gguf")
    g = GGUFFile(tmp_path / "s.gguf")
    head = g.data_start
    p = tmp_path / "m.gguf"
    cases = [raw[:i] for i in range(head + 1)]
    for _ in range(2000):
        b = bytearray(raw)
        for _ in range(rng.integers(1, 4)): b[rng.integers(0, head)] = rng.integers(0, 256)
        cases.append(bytes(b))
    for pos in range(8, head - 8, 4):                       # a huge 64-bit value written over each aligned field
        b = bytearray(raw); b[pos:pos + 8] = struct.pack("<Q", 2**63 - 1); cases.append(bytes(b))
    ok = 0
    for c in cases:
        p.write_bytes(c)
        try:
            f = GGUFFile(p)
            for k in f.tensors: f.tensor(k)
            ok += 1
        except MiniLlamaError as e:
            assert "\n" not in str(e)
    assert ok < len(cases)


# --- Meta's layout: params.json + consolidated.NN.pth, unsharded by rows or columns ---------------------------------

def make_meta(hf, out, n_shards, emb_axis):
    "Write a transformers model as Meta's sharded checkpoint: q/k back to interleaved pairs, each tensor cut by its axis."
    import json
    from minillama.checkpoint import hf_name
    from minillama.meta import META_SPLIT, meta_name
    from minillama.model import weight_shapes
    from minillama.positions import permute_qk_half_to_interleaved
    c = hf.config
    sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    cfg = minillama.checkpoint.config_from_hf(c.to_dict())
    full = {}
    for n in weight_shapes(cfg):
        a = sd[hf_name(n)]
        if n.endswith(".wq"): a = permute_qk_half_to_interleaved(a, cfg.n_heads)
        if n.endswith(".wk"): a = permute_qk_half_to_interleaved(a, cfg.n_kv_heads)
        full[n] = a
    out.mkdir()
    for s in range(n_shards):
        part = {}
        for n, a in full.items():
            axis = emb_axis if n == "tok_embeddings" else META_SPLIT.get(n.split(".")[-1])
            part[meta_name(n)] = torch.from_numpy(np.ascontiguousarray(a if axis is None else np.split(a, n_shards, axis=axis)[s]))
        part["rope.freqs"] = torch.ones(cfg.head_dim // 2)           # Meta stores this buffer too; it must be ignored
        torch.save(part, out / f"consolidated.{s:02d}.pth")
    (out / "params.json").write_text(json.dumps(dict(dim=c.hidden_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
        n_kv_heads=c.num_key_value_heads, vocab_size=c.vocab_size, multiple_of=32, norm_eps=c.rms_norm_eps,
        rope_theta=c.rope_parameters["rope_theta"], max_seq_len=c.max_position_embeddings)))
    return full


@pytest.mark.parametrize("n_shards, emb_axis", [(1, 1), (2, 1), (4, 1), (4, 0)])
def test_meta_unsharding(hf_dir, tmp_path, n_shards, emb_axis):
    from minillama.gguf_llama import gguf_name
    d, hf = hf_dir("llama2")
    full = make_meta(hf, tmp_path / "meta", n_shards, emb_axis)
    out = convert_to_gguf(tmp_path / "meta", tmp_path / "m.gguf", progress=False, no_vocab=True)
    g = GGUFFile(out)
    for n, a in full.items():                                      # exactly the unsharded weights
        assert np.array_equal(g.tensor(gguf_name(n)), a), n
    ids = np.random.default_rng(4).integers(0, 512, size=64)
    assert_close(minillama.load(out).forward(ids), hf_logits(hf, ids), what=f"Meta {n_shards} shards -> GGUF vs transformers")


def test_meta_refuses_pickled_code(hf_dir, tmp_path):
    import pickle
    d, hf = hf_dir("llama2")
    make_meta(hf, tmp_path / "meta", 1, 1)

    class Evil:
        def __reduce__(self): return (print, ("this code ran",))
    torch.save({"x": Evil()}, tmp_path / "meta" / "consolidated.00.pth", pickle_module=pickle)
    with pytest.raises(MiniLlamaError, match="not a tensors-only checkpoint"):
        convert_to_gguf(tmp_path / "meta", tmp_path / "m.gguf", progress=False, no_vocab=True)
    assert not (tmp_path / "m.gguf").exists() and not list(tmp_path.glob("*.tmp"))


def test_meta_missing_tensor(hf_dir, tmp_path):
    d, hf = hf_dir("llama2")
    make_meta(hf, tmp_path / "meta", 2, 1)
    sd = torch.load(tmp_path / "meta" / "consolidated.01.pth", weights_only=True)
    del sd["layers.1.attention.wo.weight"]
    torch.save(sd, tmp_path / "meta" / "consolidated.01.pth")
    with pytest.raises(MiniLlamaError, match="layers.1.attention.wo.weight"):
        convert_to_gguf(tmp_path / "meta", tmp_path / "m.gguf", progress=False, no_vocab=True)


def test_bf16_gguf_both_backends(hf_dir, tmp_path):
    "A GGUF with BF16 matrices (raw bits, as llama.cpp stores them) runs on both backends within bf16 tolerance."
    d, hf = hf_dir("llama2")
    f32 = GGUFFile(convert_to_gguf(d, tmp_path / "f.gguf", progress=False, no_vocab=True))
    md = {k: ((f32.types[k], v) if f32.types[k] != 9 else v) for k, v in f32.metadata.items()}
    to_bf16 = lambda a: (torch.from_numpy(np.ascontiguousarray(a)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16), "BF16")
    tensors = {k: (to_bf16(f32.tensor(k)) if t["shape"].__len__() == 2 else (f32.tensor(k), "F32")) for k, t in f32.tensors.items()}
    write_gguf(tmp_path / "b.gguf", md, tensors, progress=False)
    g = GGUFFile(tmp_path / "b.gguf")
    assert g.tensors["blk.0.attn_q.weight"]["type"] == "BF16" and gguf.GGUFReader(tmp_path / "b.gguf").tensors[1].tensor_type.name in ("BF16", "F32")
    ids = np.random.default_rng(5).integers(0, 512, size=50)
    ref = hf_logits(hf, ids)
    for be in ("numpy", "torch"):
        assert_close(minillama.load(tmp_path / "b.gguf", be).forward(ids), ref, dtype="bfloat16", what=f"BF16 GGUF {be}")
