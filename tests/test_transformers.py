"Both backends against Hugging Face transformers' LlamaForCausalLM on the same saved weights."
import dataclasses
import json
import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

import minillama
from minillama.core import assert_close

# (style, overrides, sequence shape): every configuration the foundation issue names
CONFIGS = {
    "mha-llama1":        ("llama1", {}, (1, 64)),
    "gqa-kv1":           ("llama2", dict(num_key_value_heads=1), (1, 64)),
    "gqa-kv2-llama2":    ("llama2", {}, (1, 64)),
    "head_dim64":        ("llama2", dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2), (1, 48)),
    "head_dim24-odd":    ("llama2", dict(hidden_size=120, num_attention_heads=5, num_key_value_heads=1), (1, 48)),
    "explicit-head_dim": ("llama2", dict(head_dim=48, num_attention_heads=4, num_key_value_heads=2), (1, 48)),
    "theta500k-llama3":  ("llama3", {}, (1, 300)),
    "eps1e-6-theta500k": ("llama1", dict(rope_theta=500000.0, rms_norm_eps=1e-6), (1, 64)),
    "batch-of-two":      ("llama3", dict(num_key_value_heads=4), (2, 40)),
    "untied-3-layers":   ("llama2", dict(num_hidden_layers=3, tie_word_embeddings=False), (1, 32)),
}


def hf_logits(hf, ids):
    with torch.no_grad():
        return hf(torch.as_tensor(np.atleast_2d(ids))).logits.numpy()


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_logits_match_transformers(hf_dir, name, backend):
    style, over, shape = CONFIGS[name]
    d, hf = hf_dir(style, **over)
    m = minillama.load(d, backend=backend, device="cpu" if backend == "torch" else None)
    ids = np.random.default_rng(0).integers(0, m.cfg.vocab_size, size=shape)
    ids = ids[0] if shape[0] == 1 else ids
    ref = hf_logits(hf, ids)
    ref = ref[0] if ids.ndim == 1 else ref
    assert_close(m.forward(ids), ref, dtype="float32", what=f"{name} {backend} vs transformers")


@pytest.mark.parametrize("name", CONFIGS)
def test_backends_agree_incremental(hf_dir, name):
    "numpy vs torch, full pass and prompt + token-by-token decoding through the KV cache."
    style, over, shape = CONFIGS[name]
    d, _ = hf_dir(style, **over)
    mn, mt = minillama.load(d, "numpy"), minillama.load(d, "torch", device="cpu")
    ids = np.random.default_rng(1).integers(0, mn.cfg.vocab_size, size=(shape[0], min(shape[1], 64)))
    full = mn.forward(ids)
    assert_close(mt.forward(ids), full, what=f"{name}: torch vs numpy")
    for m in (mn, mt):
        cache, split = m.new_cache(ids.shape[0], ids.shape[1]), ids.shape[1] // 2
        parts = [minillama.core.to_numpy(m.forward(ids[:, :split], cache=cache))]
        parts += [minillama.core.to_numpy(m.forward(ids[:, t:t + 1], cache=cache, start_pos=t)) for t in range(split, ids.shape[1])]
        assert_close(np.concatenate(parts, axis=1), full, what=f"{name}: {m.backend} incremental vs full")


@pytest.mark.parametrize("name", ["mha-llama1", "gqa-kv1", "head_dim24-odd", "theta500k-llama3"])
def test_greedy_32_tokens_match_transformers(hf_dir, name):
    style, over, _ = CONFIGS[name]
    d, hf = hf_dir(style, **over)
    prompt = np.random.default_rng(2).integers(0, 512, size=10)
    with torch.no_grad():
        # plain greedy: no EOS stopping (min_new_tokens would instead forbid EOS, which is not greedy)
        ref = hf.generate(torch.as_tensor(prompt)[None], max_new_tokens=32, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[0, 10:].tolist()
    assert len(ref) == 32
    for backend in ("numpy", "torch"):
        got = list(minillama.load(d, backend).generate(prompt, max_new_tokens=32, temperature=0))
        assert got == ref, f"{name} {backend}: {got} != {ref}"


def test_legacy_rope_spelling(hf_dir, tmp_path):
    "Checkpoints in the wild write rope_theta + rope_scaling; newer transformers writes rope_parameters: same model."
    d, hf = hf_dir("llama3")
    cfg = json.loads((d / "config.json").read_text())
    rp = cfg.pop("rope_parameters")
    assert rp["rope_type"] == "llama3"
    cfg["rope_theta"] = rp.pop("rope_theta")
    cfg["rope_scaling"] = rp
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").symlink_to(d / "model.safetensors")
    old, new = minillama.load(tmp_path), minillama.load(d)
    assert old.cfg == new.cfg and old.cfg.rope_scaling["factor"] == 8.0 and old.cfg.rope_theta == 500000.0
    ids = np.arange(100) % 512
    assert_close(old.forward(ids), hf_logits(hf, ids)[0], what="legacy rope_scaling vs transformers")


def test_llama3_scaling_matters(hf_dir):
    "The check is sharp: dropping the llama3 scaling changes the logits by more than the tolerance."
    d, hf = hf_dir("llama3")
    m = minillama.load(d)
    ids = np.random.default_rng(3).integers(0, 512, size=300)
    ref = hf_logits(hf, ids)[0]
    m.inv_freq = minillama.positions.rope_inv_freq(m.cfg.head_dim, m.cfg.rope_theta)      # unscaled
    r = minillama.core.compare(m.forward(ids), ref, verbose=False)
    assert not r["ok"], r


def test_sharded_checkpoint(hf_dir, tmp_path):
    d, hf = hf_dir("llama2")
    hf.save_pretrained(tmp_path, max_shard_size="50KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and len(list(tmp_path.glob("*.safetensors"))) > 3
    ids = np.arange(20)
    assert_close(minillama.load(tmp_path).forward(ids), hf_logits(hf, ids)[0], what="sharded vs transformers")


def test_half_precision_checkpoint(hf_dir, tmp_path):
    "bf16 and f16 files load on both backends; numpy computes in float32 from the widened weights."
    d, hf = hf_dir("llama2")
    ids = np.arange(30)
    for dt, tol in [(torch.bfloat16, "bfloat16"), (torch.float16, "float16")]:
        out = tmp_path / str(dt)
        LlamaForCausalLM.from_pretrained(d, dtype=dt).save_pretrained(out)
        ref = hf_logits(LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval(), ids)[0]
        assert_close(minillama.load(out, "numpy").forward(ids), ref, dtype="float32", what=f"{dt} file, numpy f32")
        assert_close(minillama.load(out, "torch", device="cpu").forward(ids), ref, dtype="float32", what=f"{dt} file, torch f32")
        assert_close(minillama.load(out, "torch", device="cpu", dtype=tol).forward(ids), ref, dtype=tol, what=f"{dt} file, torch {tol}")


# Each knob of the config, perturbed, must make the comparison with transformers fail at float32's rtol (1e-5).
KNOBS = {
    "norm_eps 1e-6 -> 1e-4":   ("llama1", lambda c, w: (dataclasses.replace(c, norm_eps=1e-4), w)),
    "rope_theta x1.05":        ("llama1", lambda c, w: (dataclasses.replace(c, rope_theta=c.rope_theta * 1.05), w)),
    "tie_embeddings":          ("llama2", lambda c, w: (dataclasses.replace(c, tie_embeddings=True),
                                                        dataclasses.replace(w, output=w.tok_embeddings))),
    "rope_layout interleaved": ("llama2", lambda c, w: (dataclasses.replace(c, rope_layout="interleaved"), w)),
    "llama3 scaling dropped":  ("llama3", lambda c, w: (dataclasses.replace(c, rope_scaling=None), w)),
}


@pytest.mark.parametrize("knob", KNOBS)
def test_each_config_knob_is_sharp(hf_dir, knob):
    style, perturb = KNOBS[knob]
    d, hf = hf_dir(style)
    m = minillama.load(d)
    ids = np.random.default_rng(5).integers(0, 512, size=300 if style == "llama3" else 64)
    ref = hf_logits(hf, ids)[0]
    assert minillama.core.compare(m.forward(ids), ref, "float32", what=f"{style} as loaded")["ok"]
    c, w = perturb(m.cfg, m.w)
    r = minillama.core.compare(minillama.Llama(c, w, m.ops).forward(ids), ref, "float32", what=knob)
    assert not r["ok"], r


def test_head_dim_is_read(hf_dir, tmp_path):
    "A config whose head_dim differs from hidden/heads: dropping head_dim from config.json is refused, by shape."
    d, _ = hf_dir("llama2", head_dim=48, num_attention_heads=4, num_key_value_heads=2)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg.pop("head_dim") == 48 and minillama.load(d).cfg.head_dim == 48
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").symlink_to(d / "model.safetensors")
    with pytest.raises(minillama.MiniLlamaError, match="has shape"):
        minillama.load(tmp_path)
