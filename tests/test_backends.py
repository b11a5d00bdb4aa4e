"numpy and torch on the same random weights: every layout, tied embeddings, half precision, generation."
import numpy as np
import pytest
import torch

from minillama.core import assert_close, compare, to_numpy
from minillama.model import Llama, LlamaConfig, random_weights
from minillama.positions import permute_qk_half_to_interleaved


def cfg(**kw):
    base = dict(dim=96, n_layers=2, n_heads=6, n_kv_heads=2, vocab_size=300, hidden_dim=256, max_seq_len=256)
    return LlamaConfig(**{**base, **kw})


@pytest.mark.parametrize("kw", [{}, dict(rope_layout="interleaved"), dict(tie_embeddings=True), dict(n_kv_heads=1),
                                dict(n_kv_heads=6), dict(head_dim=20),
                                dict(rope_theta=500000.0, rope_scaling=dict(rope_type="llama3", factor=8.0,
                                     low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64))])
def test_numpy_torch_agree(kw, rng):
    c = cfg(**kw)
    W = random_weights(c, seed=3)
    mn, mt = Llama.from_weights(c, W, "numpy"), Llama.from_weights(c, W, "torch", device="cpu")
    ids = rng.integers(0, c.vocab_size, size=(2, 200))
    ref = mn.forward(ids)
    assert isinstance(ref, np.ndarray) and isinstance(mt.forward(ids), torch.Tensor)
    assert_close(mt.forward(ids), ref, what=f"{kw}: torch vs numpy")
    cache = mt.new_cache(2, 200)
    parts = [mt.forward(ids[:, :150], cache=cache)] + [mt.forward(ids[:, t:t + 1], cache=cache, start_pos=t) for t in range(150, 200)]
    assert_close(torch.cat(parts, dim=1), ref, what=f"{kw}: torch incremental vs numpy full")


def test_layouts_are_the_same_model(rng):
    "Weights for rotate-half, permuted to interleaved and run with the interleaved kernel: the same logits."
    c = cfg()
    W = random_weights(c, seed=4)
    Wi = random_weights(c, seed=4)
    for L in Wi.layers:
        L.wq = permute_qk_half_to_interleaved(L.wq, c.n_heads)
        L.wk = permute_qk_half_to_interleaved(L.wk, c.n_kv_heads)
    ci = cfg(rope_layout="interleaved")
    ids = rng.integers(0, 300, size=64)
    assert_close(Llama.from_weights(ci, Wi).forward(ids), Llama.from_weights(c, W).forward(ids), what="layouts")
    wrong = compare(Llama.from_weights(c, Wi).forward(ids), Llama.from_weights(c, W).forward(ids), verbose=False)
    assert not wrong["ok"]


def test_half_precision_torch(rng):
    c = cfg()
    W = random_weights(c, seed=5)
    ids = rng.integers(0, 300, size=50)
    ref = Llama.from_weights(c, W, "numpy").forward(ids)
    for dt in ("bfloat16", "float16"):
        m = Llama.from_weights(c, W, "torch", device="cpu", dtype=dt)
        out = m.forward(ids)
        assert str(out.dtype) == f"torch.{dt}"
        assert_close(out, ref, dtype=dt, what=f"torch {dt} vs numpy float32")


def test_generate_same_tokens_both_backends(rng):
    c = cfg()
    W = random_weights(c, seed=6, scale=2.0)
    prompt = rng.integers(0, 300, size=8)
    mn, mt = Llama.from_weights(c, W, "numpy"), Llama.from_weights(c, W, "torch", device="cpu")
    for kw in (dict(temperature=0), dict(temperature=0.9, top_k=50, top_p=0.9, seed=11)):
        a, b = list(mn.generate(prompt, max_new_tokens=30, **kw)), list(mt.generate(prompt, max_new_tokens=30, **kw))
        assert a == b and len(a) == 30 and all(isinstance(t, int) for t in a)


def test_generate_stops_and_respects_context(rng):
    c = cfg(max_seq_len=20)
    m = Llama.from_weights(c, random_weights(c, seed=7, scale=2.0))
    prompt = rng.integers(0, 300, size=15)
    out = list(m.generate(prompt, max_new_tokens=50, temperature=0))
    assert len(out) == 6                                   # positions 15..19 filled, the 6th token needs none
    first = out[0]
    assert list(m.generate(prompt, max_new_tokens=50, temperature=0, stop=[first])) == [first]
    assert list(m.generate(prompt, max_new_tokens=0)) == []


def test_zero_copy_on_cpu():
    c = cfg()
    W = random_weights(c)
    mt = Llama.from_weights(c, W, "torch", device="cpu")
    assert mt.w.layers[1].w_down.data_ptr() == W.layers[1].w_down.ctypes.data
    assert Llama.from_weights(c, W, "numpy").w.layers[1].w_down is W.layers[1].w_down


def test_compare_helper_is_sharp():
    ref = np.linspace(-20, 20, 1000).astype(np.float32)
    assert compare(ref * (1 + 5e-6), ref, verbose=False)["ok"]           # float32: rtol 1e-5 of max|ref| = 2e-4
    assert not compare(ref * (1 + 2e-5), ref, verbose=False)["ok"]       # 4e-4 > 2e-4
    assert not compare(ref + 0.01, ref, verbose=False)["ok"]
    assert not compare(np.where(ref > 19, np.nan, ref), ref, verbose=False)["ok"]
    with pytest.raises(AssertionError):
        assert_close(ref + 1, ref)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_prefix_once_many_suffixes(backend, rng):
    "Scores from one shared prefix cache equal scores of each full sequence run separately."
    from minillama.generation import score_suffixes, log_softmax
    c = cfg()
    m = Llama.from_weights(c, random_weights(c, seed=8, scale=2.0), backend, device="cpu" if backend == "torch" else None)
    prefix = rng.integers(0, 300, size=40)
    cands = [rng.integers(0, 300, size=n) for n in (1, 2, 7, 20)]
    got = score_suffixes(m, prefix, cands)
    for c_, g in zip(cands, got):
        seq = np.concatenate([prefix, c_])
        lp = log_softmax(to_numpy(m.forward(seq)))
        want = lp[np.arange(len(prefix) - 1, len(seq) - 1), c_].sum()
        assert abs(g - want) <= 1e-5 * abs(want) + 1e-5, (g, want)


def test_torch_cpu_kernels_match_numpy(rng):
    "The fast torch CPU kernels (oneDNN linear, fused rms_norm, complex RoPE) against numpy, and each one sharp."
    from minillama.mlp_norm import linear_np, linear_torch, onednn_linear, rmsnorm_np, rmsnorm_torch
    from minillama.positions import rope_cos_sin, rope_interleaved_np, rope_interleaved_torch, rope_inv_freq
    assert onednn_linear() is not None                                  # this torch has oneDNN: the path is taken
    W = rng.standard_normal((300, 96)).astype(np.float32)
    for shape in ((1, 1, 96), (2, 7, 96)):                              # one token (decode) and a batch of prompts
        x = rng.standard_normal(shape).astype(np.float32)
        assert_close(linear_torch(torch.from_numpy(x), torch.from_numpy(W)), linear_np(x, W), what=f"linear {shape}")
    x = rng.standard_normal((2, 7, 96)).astype(np.float32)
    wrong = linear_torch(torch.from_numpy(x), torch.from_numpy(W[::-1].copy()))
    assert not compare(wrong, linear_np(x, W), verbose=False)["ok"]
    w = rng.standard_normal(96).astype(np.float32)
    assert_close(rmsnorm_torch(torch.from_numpy(x), torch.from_numpy(w), 1e-5), rmsnorm_np(x, w, 1e-5), what="rmsnorm")
    assert not compare(rmsnorm_torch(torch.from_numpy(x), torch.from_numpy(w), 1e-1), rmsnorm_np(x, w, 1e-5),
                       verbose=False)["ok"]
    q = rng.standard_normal((2, 4, 7, 32)).astype(np.float32)          # [B, H, T, hd]
    cos, sin = rope_cos_sin(np.arange(5, 12), rope_inv_freq(32))
    qt = torch.from_numpy(q.transpose(0, 2, 1, 3).copy()).transpose(1, 2)   # non-contiguous, as heads() makes it
    ref = rope_interleaved_np(q, cos, sin)
    assert_close(rope_interleaved_torch(qt, torch.from_numpy(cos), torch.from_numpy(sin)), ref, what="RoPE complex")
    assert not compare(rope_interleaved_torch(qt, torch.from_numpy(sin), torch.from_numpy(cos)), ref,
                       verbose=False)["ok"]
