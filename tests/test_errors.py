"Bad input: each gives MiniLlamaError, one line, naming the file or argument."
import json
import shutil
import numpy as np
import pytest
import torch

import minillama
from minillama.checkpoint import save_safetensors
from minillama.core import MiniLlamaError


def one_line_error(f, *a, must=(), **kw):
    with pytest.raises(MiniLlamaError) as e:
        f(*a, **kw)
    msg = str(e.value)
    assert "\n" not in msg and all(m in msg for m in must), msg
    return msg


@pytest.fixture
def ckpt(hf_dir, tmp_path):
    d, _ = hf_dir("llama2")
    out = tmp_path / "ck"
    shutil.copytree(d, out)
    return out


def edit_config(d, **change):
    cfg = json.loads((d / "config.json").read_text())
    for k, v in change.items():
        if v is None: cfg.pop(k, None)
        else: cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


def test_missing_path(tmp_path):
    one_line_error(minillama.load, tmp_path / "nope", must=["nope", "no such file"])


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    one_line_error(minillama.load, ckpt, must=["config.json", "missing"])


def test_config_not_json(ckpt):
    (ckpt / "config.json").write_text("{oops")
    one_line_error(minillama.load, ckpt, must=["config.json", "JSON"])


def test_other_architecture(ckpt):
    edit_config(ckpt, model_type="gpt2", architectures=["GPT2LMHeadModel"])
    one_line_error(minillama.load, ckpt, must=["config.json", "gpt2", "not a Llama"])


def test_hidden_not_divisible_by_heads(ckpt):
    edit_config(ckpt, num_attention_heads=6, head_dim=None, num_key_value_heads=2)
    one_line_error(minillama.load, ckpt, must=["config.json", "hidden size 128", "6 heads"])


def test_kv_heads_do_not_divide(ckpt):
    edit_config(ckpt, num_key_value_heads=3)
    one_line_error(minillama.load, ckpt, must=["config.json", "3 key/value heads"])


def test_shapes_inconsistent_with_config(ckpt):
    edit_config(ckpt, intermediate_size=300)
    one_line_error(minillama.load, ckpt, must=["model.safetensors", "gate_proj", "[300, 128]"])


def test_missing_required_key(ckpt):
    edit_config(ckpt, num_hidden_layers=None)
    one_line_error(minillama.load, ckpt, must=["config.json", "num_hidden_layers"])


def test_unsupported_rope_scaling(ckpt):
    edit_config(ckpt, rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0))
    one_line_error(minillama.load, ckpt, must=["config.json", "yarn"])


def test_offsets_do_not_fit(ckpt):
    p = ckpt / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])
    one_line_error(minillama.load, ckpt, must=["model.safetensors", "outside the data section"])


def test_unsupported_weight_dtype(ckpt):
    from minillama.checkpoint import SafetensorsFile
    f = SafetensorsFile(ckpt / "model.safetensors")
    ts = {k: np.array(f.tensor(k)) for k in f.keys()}
    ts["model.norm.weight"] = ts["model.norm.weight"].astype(np.int32)
    save_safetensors(ckpt / "model.safetensors", ts)
    one_line_error(minillama.load, ckpt, must=["model.norm.weight", "I32"])


def test_missing_tensor(ckpt):
    from minillama.checkpoint import SafetensorsFile
    f = SafetensorsFile(ckpt / "model.safetensors")
    save_safetensors(ckpt / "model.safetensors", {k: np.array(f.tensor(k)) for k in f.keys() if "layers.1.mlp.up" not in k})
    one_line_error(minillama.load, ckpt, must=["model.layers.1.mlp.up_proj.weight", "missing"])


def test_bad_backend_device_dtype(ckpt):
    one_line_error(minillama.load, ckpt, backend="jax", must=["backend 'jax'"])
    one_line_error(minillama.load, ckpt, backend="numpy", device="cuda", must=["device 'cuda'"])
    one_line_error(minillama.load, ckpt, backend="numpy", dtype="float16", must=["dtype 'float16'"])
    one_line_error(minillama.load, ckpt, backend="torch", dtype="int8", must=["dtype 'int8'"])
    one_line_error(minillama.load, ckpt, backend="torch", device="tpu:0", must=["device 'tpu:0'"])
    if not torch.cuda.is_available():
        one_line_error(minillama.load, ckpt, backend="torch", device="cuda", must=["CUDA is not available"])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_token_ids(ckpt, backend):
    m = minillama.load(ckpt, backend)
    V = m.cfg.vocab_size
    one_line_error(m.forward, np.array([1, V]), must=[f"token id {V}", "outside the vocabulary"])
    one_line_error(m.forward, np.array([-1]), must=["token id -1"])
    one_line_error(m.forward, np.array([0.5]), must=["integers"])
    one_line_error(m.forward, np.zeros((0,), int), must=["shape"])
    one_line_error(m.forward, np.zeros((1, 1, 1), int), must=["shape"])
    one_line_error(m.forward, np.zeros(m.cfg.max_seq_len + 1, int), must=["context"])
    one_line_error(lambda: list(m.generate([1, 2], temperature=-1)), must=["temperature"])
    one_line_error(lambda: list(m.generate([1, 2], top_p=0)), must=["top_p"])
    one_line_error(lambda: list(m.generate([1, 2], top_k=-3)), must=["top_k"])
    one_line_error(lambda: list(m.generate([1, 2], max_new_tokens=-1)), must=["max_new_tokens"])
    cache = m.new_cache(1, 8)
    m.forward(np.arange(8), cache=cache)
    one_line_error(m.forward, np.array([1]), cache=cache, start_pos=8, must=["KV cache"])
