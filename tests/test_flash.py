"Chunked attention with the online softmax equals naive attention (and torch's SDPA), within 1e-5."
import numpy as np
import pytest
import torch

from minillama.attention import attention_np
from minillama.core import assert_close
from minillama.flash import flash_attention_np, flash_attention_torch


@pytest.mark.parametrize("B, H, KV, T, S, hd, chunk", [
    (1, 8, 2, 200, 200, 32, 64), (2, 4, 4, 7, 90, 16, 13), (1, 6, 1, 1, 257, 24, 1), (1, 4, 2, 33, 33, 8, 1000),
    (1, 2, 1, 128, 1000, 64, 256)])
def test_equals_naive(B, H, KV, T, S, hd, chunk, rng):
    q = rng.normal(size=(B, H, T, hd)).astype(np.float32) * 3          # larger scores: the running max matters
    k, v = (rng.normal(size=(B, KV, S, hd)).astype(np.float32) for _ in range(2))
    ref = attention_np(q, k, v)
    assert_close(flash_attention_np(q, k, v, chunk), ref, rtol=1e-5, what="numpy chunked")
    assert_close(flash_attention_torch(*map(torch.from_numpy, (q, k, v)), chunk=chunk), ref, rtol=1e-5, what="torch chunked")


def test_matches_torch_sdpa(rng):
    q = torch.from_numpy(rng.normal(size=(2, 8, 150, 32)).astype(np.float32))
    k, v = (torch.from_numpy(rng.normal(size=(2, 2, 150, 32)).astype(np.float32)) for _ in range(2))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert_close(flash_attention_torch(q, k, v, chunk=40), ref, rtol=1e-5, what="chunked vs SDPA")


def test_extreme_scores_stay_finite(rng):
    "Scores in the thousands: the running max keeps every exp in range."
    q = rng.normal(size=(1, 1, 64, 16)).astype(np.float32) * 300
    k, v = (rng.normal(size=(1, 1, 64, 16)).astype(np.float32) for _ in range(2))
    out = flash_attention_np(q, k, v, 8)
    assert np.isfinite(out).all()
    assert_close(out, attention_np(q, k, v), rtol=1e-5, what="extreme scores")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_model_uses_chunked_attention_for_long_prompts(backend, monkeypatch, rng):
    "Past FLASH_MIN_SCORES the model's attention runs in chunks (torch: SDPA where it applies); the logits do not change."
    import minillama.flash as mf
    from minillama.model import Llama, LlamaConfig, random_weights
    cfg = LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=100, hidden_dim=128, max_seq_len=600)
    ids = rng.integers(0, 100, 300)
    m = Llama.from_weights(cfg, random_weights(cfg), backend, device="cpu" if backend == "torch" else None)
    c_ref = m.new_cache()
    ref = np.concatenate([m.ops.numpy(m.forward(ids[:200], c_ref)), m.ops.numpy(m.forward(ids[200:], c_ref, 200))])
    calls = []
    name = f"flash_attention_{'np' if backend == 'numpy' else 'torch'}"
    real = getattr(mf, name)
    monkeypatch.setattr(mf, name, lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    monkeypatch.setattr(mf, "FLASH_MIN_SCORES", 1000)
    c = m.new_cache()
    got = np.concatenate([m.ops.numpy(m.forward(ids[:200], c)), m.ops.numpy(m.forward(ids[200:], c, 200))])
    assert calls, "the chunked kernel was not used"
    if backend == "torch": assert all(s[2] == 100 for s in calls)       # the prompt from 0 went to SDPA, the rest chunked
    assert_close(got, ref, what=f"{backend}: chunked attention in the model vs naive")
