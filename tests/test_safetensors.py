"Our safetensors reader against the `safetensors` package (the reference), and against broken files."
import json
import struct
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as ref_save_np
from safetensors.torch import save_file as ref_save_torch, load_file as ref_load_torch

from minillama.checkpoint import SafetensorsFile, save_safetensors
from minillama.core import MiniLlamaError


def test_reads_files_written_by_the_reference(tmp_path, rng):
    ts = {"f32": rng.normal(size=(5, 7)).astype(np.float32), "f16": rng.normal(size=(3,)).astype(np.float16),
          "f64": rng.normal(size=(2, 2, 2)), "i64": np.arange(10), "u8": np.arange(5, dtype=np.uint8),
          "empty": np.zeros((0, 3), np.float32), "scalar": np.array(3.5, np.float32)}
    ref_save_np(ts, str(tmp_path / "a.safetensors"), metadata={"format": "np"})
    f = SafetensorsFile(tmp_path / "a.safetensors")
    assert set(f.keys()) == set(ts) and f.metadata == {"format": "np"}
    for k, v in ts.items():
        got = f.tensor(k)
        assert got.dtype == v.dtype and got.shape == v.shape and np.array_equal(got, v)
        assert not got.flags.writeable                      # a view of the read-only map


def test_bf16_raw_bits(tmp_path):
    t = torch.randn(4, 6).to(torch.bfloat16)
    ref_save_torch({"w": t}, str(tmp_path / "b.safetensors"))
    f = SafetensorsFile(tmp_path / "b.safetensors")
    assert f.dtype("w") == "BF16"
    got = torch.from_numpy(f.tensor("w").copy()).view(torch.bfloat16)
    assert torch.equal(got, t)


def test_our_writer_is_read_by_the_reference(tmp_path, rng):
    ts = {"x": rng.normal(size=(4, 4)).astype(np.float32), "y": np.arange(6, dtype=np.int32).reshape(2, 3)}
    save_safetensors(tmp_path / "o.safetensors", ts, metadata={"k": "v"})
    back = ref_load_torch(str(tmp_path / "o.safetensors"))
    for k, v in ts.items(): assert np.array_equal(back[k].numpy(), v)
    assert not list(tmp_path.glob("*.tmp"))                 # the temporary name is gone after the rename


def _valid(tmp_path, rng):
    p = tmp_path / "v.safetensors"
    ref_save_np({"a": rng.normal(size=(8, 8)).astype(np.float32), "b": np.arange(16, dtype=np.float16)}, str(p))
    return p.read_bytes()


def _header(raw, obj):
    h = json.dumps(obj).encode()
    return struct.pack("<Q", len(h)) + h + raw[8 + struct.unpack("<Q", raw[:8])[0]:]


@pytest.mark.parametrize("case", ["offsets past end", "size mismatch", "overlap", "negative offset", "bad dtype",
                                  "bad shape", "duplicate key", "not an object", "missing field"])
def test_lying_headers(tmp_path, rng, case):
    raw = _valid(tmp_path, rng)
    n = struct.unpack("<Q", raw[:8])[0]
    h = json.loads(raw[8:8 + n])
    a = h["a"]
    if case == "offsets past end": a["data_offsets"] = [0, 10**9]
    if case == "size mismatch": a["shape"] = [8, 9]
    if case == "overlap": h["b"]["data_offsets"] = [100, 132]
    if case == "negative offset": a["data_offsets"] = [-4, 252]
    if case == "bad dtype": a["dtype"] = "F8_E4M3"
    if case == "bad shape": a["shape"] = [8, "8"]
    if case == "missing field": del a["data_offsets"]
    data = _header(raw, h if case != "not an object" else [1, 2])
    if case == "duplicate key":
        hs = json.dumps(h).encode()
        hs = hs[:-1] + b', "a": ' + json.dumps(a).encode() + b"}"
        data = struct.pack("<Q", len(hs)) + hs + raw[8 + n:]
    p = tmp_path / "bad.safetensors"
    p.write_bytes(data)
    with pytest.raises(MiniLlamaError) as e:
        SafetensorsFile(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_mutations_raise_only_our_error(tmp_path, rng):
    "Truncation at every header byte, random byte flips and huge length fields: only MiniLlamaError, or a valid file."
    raw = _valid(tmp_path, rng)
    n = struct.unpack("<Q", raw[:8])[0]
    p = tmp_path / "m.safetensors"
    cases = [raw[:i] for i in range(0, 8 + n + 1)]
    for _ in range(3000):
        b = bytearray(raw)
        for _ in range(rng.integers(1, 4)): b[rng.integers(0, 8 + n)] = rng.integers(0, 256)
        cases.append(bytes(b))
    cases += [struct.pack("<Q", v) + raw[8:] for v in (2**63, 2**64 - 1, n + 1, len(raw))]
    n_ok = 0
    for c in cases:
        p.write_bytes(c)
        try:
            f = SafetensorsFile(p)
            for k in f.keys(): f.tensor(k)                  # every view a valid header allows must be readable
            n_ok += 1
        except MiniLlamaError as e:
            assert "\n" not in str(e)
    assert n_ok < len(cases)
