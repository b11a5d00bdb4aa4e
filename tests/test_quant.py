"Quantization: byte-exact with llama.cpp's reference (gguf.quants), quantized inference on both backends, bad input."
import os, subprocess
import numpy as np
import pytest
import torch
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize as ref_quantize, dequantize as ref_dequantize

import minillama
from minillama.cli import main, shipped_model
from minillama.core import MiniLlamaError, assert_close, compare
from minillama.gguf import GGUFFile
from minillama.quant import QUANTIZERS, BLOCKS, dequantize, quantize_q4_k
from minillama.quant import round_away
from minillama.quant_kernels import (AFFINE, CODE_BITS, NATIVE_SOURCE, NATIVE_TYPES, NativeQuantWeight, QuantWeight,
                                     TorchQuantWeight, affine_codes, compile_native, int4_block, native, native_linear,
                                     native_f32_linear, native_product, native_quant_linears, pack_int4, quant_weight,
                                     KINDS, NATIVE_F32_ROWS, NATIVE_ROWS, AVX512_ROWS, native_rows)
from minillama.quantize import quantize_gguf
from minillama.positions import permute_qk_interleaved_to_half


def edge_cases(rng):
    return {"normal": rng.normal(size=(16, 512)), "wide": rng.normal(size=(3, 4096)) * 100, "zeros": np.zeros((2, 64)),
            "constant": np.full((2, 96), -2.5), "outlier": np.where(np.arange(256) == 77, -3e4, rng.normal(size=(2, 256))),
            "negative max": -np.abs(rng.normal(size=(4, 64))) * 7, "tiny": rng.normal(size=(2, 64)) * 1e-30,
            "halves": (np.arange(-128, 128) / 2.0)[None], "ties": np.tile([1.0, -1.0, 0.5, -0.5], (2, 16))}


@pytest.mark.parametrize("qt", [q for q in QUANTIZERS if q != "Q4_K"])     # gguf.quants cannot write K-quants
def test_quantize_byte_exact(qt, rng):
    for name, x in edge_cases(rng).items():
        x = x.astype(np.float32)
        ours, theirs = QUANTIZERS[qt](x), ref_quantize(x, getattr(T, qt))
        assert np.array_equal(ours, theirs), (qt, name)
        assert np.array_equal(dequantize(ours, qt), ref_dequantize(theirs, getattr(T, qt))), (qt, name)


@pytest.mark.parametrize("qt", list(BLOCKS))
def test_dequantize_matches_reference(qt, rng):
    n, nb = BLOCKS[qt]
    raw = rng.integers(0, 256, size=(20, 3 * nb), dtype=np.uint8)
    blocks = raw.reshape(-1, nb)
    scale_at = {"Q6_K": (208,), "Q4_1": (0, 2), "Q5_1": (0, 2), "Q4_K": (0, 2), "Q5_K": (0, 2)}.get(qt, (0,))
    for off in scale_at:                                           # finite scales (random bits may be inf/NaN)
        blocks[:, off:off + 2] = np.float16(rng.uniform(-2, 2, len(blocks))).view(np.uint8).reshape(-1, 2)
    assert np.array_equal(dequantize(raw, qt), ref_dequantize(raw, getattr(T, qt)).astype(np.float32)), qt


def test_bad_input():
    with pytest.raises(MiniLlamaError, match="w.bad: row length 40 is not a multiple"):
        QUANTIZERS["Q4_0"](np.ones((2, 40), np.float32), "w.bad")
    for v in (np.inf, -np.inf, np.nan):
        with pytest.raises(MiniLlamaError, match="inf or NaN"):
            QUANTIZERS["Q8_0"](np.full((1, 32), v, np.float32))
    with pytest.raises(MiniLlamaError, match="IQ2_XS is not supported"):
        dequantize(np.zeros((1, 66), np.uint8), "IQ2_XS")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    return {qt: quantize_gguf(shipped_model(), d / f"{qt}.gguf", qt, progress=False) for qt in ("q8_0", "q4_0", "q4_k")}, d


def test_q4_k_file(quantized):
    "Q4_K where rows are multiples of 256, Q5_0 (llama.cpp's fallback) elsewhere; llama.cpp's reader agrees with ours."
    files, d = quantized
    g, r = GGUFFile(files["q4_k"]), gguf.GGUFReader(files["q4_k"])
    kinds = {t.name: t.tensor_type.name for t in r.tensors}
    assert kinds["blk.0.ffn_down.weight"] == "Q5_0" and kinds["blk.0.attn_q.weight"] == "Q4_K" and kinds["blk.0.attn_norm.weight"] == "F32"
    for t in r.tensors:
        if t.tensor_type.name in ("Q4_K", "Q5_0"):
            raw = g.tensor(t.name)
            assert np.array_equal(dequantize(raw, t.tensor_type.name), ref_dequantize(raw, t.tensor_type).astype(np.float32))


def test_q4_k_quantizer(rng):
    w = (rng.standard_t(5, size=(32, 1024)) * 0.02).astype(np.float32)
    rms = lambda qt, raw: np.sqrt(((dequantize(raw, qt) - w) ** 2).mean() / (w ** 2).mean())
    e4k, e40, e50 = rms("Q4_K", quantize_q4_k(w)), rms("Q4_0", QUANTIZERS["Q4_0"](w)), rms("Q5_0", QUANTIZERS["Q5_0"](w))
    print(f"RMS error: Q4_K {e4k:.2%}, Q4_0 {e40:.2%}, Q5_0 {e50:.2%}")
    assert e50 < e4k < 0.9 * e40
    for x in edge_cases(rng).values():
        x = x.astype(np.float32)
        if x.shape[-1] % 256: continue
        raw = quantize_q4_k(x)
        assert raw.shape == (x.shape[0], x.shape[1] // 256 * 144)
        got = dequantize(raw, "Q4_K")
        assert np.array_equal(got, ref_dequantize(raw, T.Q4_K).astype(np.float32)) and np.isfinite(got).all()
    assert np.array_equal(dequantize(quantize_q4_k(np.zeros((2, 256), np.float32)), "Q4_K"), np.zeros((2, 256)))
    with pytest.raises(MiniLlamaError, match="w.down: row length 640 is not a multiple of the block size 256"):
        quantize_q4_k(np.ones((2, 640), np.float32), "w.down")


@pytest.mark.parametrize("qt", list(AFFINE))
def test_torch_int4_planes(qt, rng):
    "Every affine type, numpy chunks and torch's int4 kernel: equal to the dequantized product (float32, bfloat16 tolerances)."
    n, nb = BLOCKS[qt]
    raw = rng.integers(0, 256, size=(37, 512 // n * nb), dtype=np.uint8)       # 37 rows: padded to 64 inside
    blocks = raw.reshape(-1, nb)
    for off in {"Q4_1": (0, 2), "Q5_1": (0, 2), "Q4_K": (0, 2), "Q5_K": (0, 2)}.get(qt, (0,)):
        blocks[:, off:off + 2] = np.float16(rng.uniform(-0.01, 0.01, len(blocks))).view(np.uint8).reshape(-1, 2)
    c, s, o = affine_codes(raw, qt)
    W = dequantize(raw, qt)
    assert_close((o[:, :, None] + s[:, :, None] * c.reshape(37, -1, 32)).reshape(37, -1), W, what=f"{qt} codes")
    x = rng.standard_normal((2, 3, 512)).astype(np.float32)
    qw = QuantWeight(raw, qt, chunk_bytes=16 * 512 * 4)                         # numpy, 16 rows per chunk
    assert_close(qw.linear(x), x @ W.T, what=f"{qt} numpy chunks")
    assert_close(qw.linear(x[0, :1]), x[0, :1] @ W.T, what=f"{qt} numpy one row")
    tw = TorchQuantWeight(raw, qt, torch.float32)
    planes = -(-CODE_BITS[qt] // 4)                    # per plane: 64 rows of 256 packed bytes, 16 float32 (scale, zero)
    assert tw.shape == (37, 512) and tw.nbytes == planes * 64 * (256 + 16 * 2 * 4)
    assert_close(tw.linear(torch.from_numpy(x)), x @ W.T, what=f"{qt} int4 planes, float32")
    assert_close(tw.linear(torch.from_numpy(x[0, :1])), x[0, :1] @ W.T, what=f"{qt} one row")
    tb = TorchQuantWeight(raw, qt, torch.bfloat16)
    assert_close(tb.linear(torch.from_numpy(x).bfloat16()), x @ W.T, "bfloat16", what=f"{qt} int4 planes, bfloat16")
    assert torch.equal(tw[np.array([[3, 36]])], torch.from_numpy(W[[3, 36]][None]))


def test_pack_int4_is_torchs_layout(rng):
    "Our numpy packing writes the bytes torch's own packing op writes; the block size is found and matters."
    c = rng.integers(0, 16, (192, 256), dtype=np.uint8)
    ref = torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.from_numpy(c.astype(np.int32)), 2).numpy()
    bn = int4_block()
    assert bn in (32, 64) and np.array_equal(pack_int4(c, bn), ref)
    assert not np.array_equal(pack_int4(c, 96 - bn), ref)
    c[5, 7] ^= 1                                                                   # one code changed: one byte differs
    assert (pack_int4(c, bn) != ref).sum() == 1


@pytest.mark.parametrize("qt", ["Q4_0", "Q8_0"])
def test_torch_int4_rows_in_several_runs(qt, rng):
    "A matrix packed in runs of rows on threads (the last one padded) multiplies as the dequantized one does."
    W = (rng.standard_normal((200, 256)) * 0.05).astype(np.float32)
    raw = QUANTIZERS[qt](W)
    tw = TorchQuantWeight(raw, qt, torch.float32)
    x = rng.standard_normal((3, 256)).astype(np.float32)
    assert_close(tw.linear(torch.from_numpy(x)), x @ dequantize(raw, qt).T, what=f"{qt}, 200 rows")
    # a prompt of 100 rows goes through the dequantized matrix in float32: float32's tolerance even in the bfloat16
    # kernel's mode, which 3 rows (the int4 kernel) only meet at bfloat16's
    tb = TorchQuantWeight(raw, qt, torch.bfloat16, torch.float32)
    x100 = rng.standard_normal((100, 256)).astype(np.float32)
    assert_close(tb.linear(torch.from_numpy(x100)), x100 @ dequantize(raw, qt).T, what=f"{qt}, 100 rows")
    assert not compare(tb.linear(torch.from_numpy(x)), x @ dequantize(raw, qt).T, verbose=False)["ok"]
    assert_close(tb.linear(torch.from_numpy(x)), x @ dequantize(raw, qt).T, "bfloat16", what=f"{qt}, 3 rows, int4")


def test_torch_prompt_dequantized_in_runs_of_rows(rng):
    "A prompt on a matrix whose float32 rows are dequantized in two runs (128 rows of 8192, then 72): the same product."
    W = (rng.standard_normal((200, 8192)) * 0.02).astype(np.float32)
    raw = QUANTIZERS["Q8_0"](W)
    tw = TorchQuantWeight(raw, "Q8_0", torch.bfloat16, torch.float32)
    assert torch.equal(torch.cat([tw.dequantized_torch(0, 128), tw.dequantized_torch(128)]),
                       torch.from_numpy(dequantize(raw, "Q8_0")))
    x = rng.standard_normal((60, 8192)).astype(np.float32)                        # 60 rows x 2 planes >= 96
    assert_close(tw.linear(torch.from_numpy(x)), x @ dequantize(raw, "Q8_0").T, what="Q8_0 prompt, 2 runs of rows")


def q8_reference(x: np.ndarray):
    "Activations [M, K] -> (int8 codes, float32 scale per 32) as llama.cpp quantizes them, in numpy."
    xb = x.reshape(-1, 32)
    d = np.abs(xb).max(1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"): inv = np.where(d > 0, np.float32(1) / d, np.float32(0))
    return round_away(xb * inv).astype(np.int8), d[:, 0]


@pytest.mark.parametrize("build", ["vector", "avx2", "scalar"])
def test_quantize_q8_is_numpys(builds, build, rng):
    """Every build's activation codes and scales equal numpy's, an all-zero block included (scale 0, no NaN): halves
    round away from zero as roundf does, and the floats next to them round to the nearer side."""
    x = (rng.standard_normal((4, 256)) * [[1], [1e-3], [50], [1]]).astype(np.float32)
    x[1, 32:64] = 0
    x[2, :32] = np.arange(-16, 16) / 2                                  # steps of 1/2 up to 8
    h = np.float32(0.5) + np.arange(-64, 63, 2, dtype=np.float32)       # with 127 in their block the scale is 1:
    x[3] = np.concatenate([[127], h[:31], [127], np.nextafter(h[:31], np.float32(np.inf)), [-127],
                           np.nextafter(h[:31], np.float32(-np.inf)), [127], -h[:31], x[3, 128:]])
    codes, scales = np.empty((4, 256), np.int8), np.empty(32, np.float32)
    builds[build].quantize_q8(x.ctypes.data, codes.ctypes.data, scales.ctypes.data, x.size)
    q, d = q8_reference(x)
    assert scales[24] == 1 and scales[9] == 0
    bad = np.flatnonzero(codes.reshape(-1, 32) != q)
    assert bad.size == 0, f"{bad.size} codes differ, first at {bad[0]}: {x.flat[bad[0]]!r} -> {codes.flat[bad[0]]}"
    assert np.array_equal(scales, d) and np.abs(codes).max() == 127


@pytest.fixture(scope="module")
def builds():
    "The kernels as built for this CPU, the AVX2 ones without the AVX-512 kernels (the same where it has none), scalar."
    try: avx2 = compile_native(NATIVE_SOURCE, ("-O3", "-march=native", "-DNO_AVX512"))
    except (OSError, subprocess.SubprocessError): avx2 = native()      # a compiler without -march=native
    return {"vector": native(), "avx2": avx2, "scalar": compile_native(NATIVE_SOURCE, ("-O3", "-DSCALAR"))}


@pytest.mark.parametrize("qt", list(NATIVE_TYPES))
@pytest.mark.parametrize("build", ["vector", "avx2", "scalar"])
def test_native_kernels(builds, build, qt, rng):
    """Both builds of the C kernels on an odd number of rows (uneven runs on the threads), one and five rows of x:
    float x = the dequantized product, int8 x = the product with x as quantize_q8 codes it, both in float32."""
    lib = builds[build]
    W = (rng.standard_normal((101, 384)) * 0.05).astype(np.float32)
    raw = QUANTIZERS[qt](W)
    Wd = dequantize(raw, qt)
    for M in (1, 5):
        x = rng.standard_normal((M, 384)).astype(np.float32)
        q, d = q8_reference(x)
        x8 = (q * d[:, None]).reshape(x.shape)
        assert_close(native_linear(raw, qt, x, exact=True, lib=lib), x @ Wd.T, what=f"{qt} {build}, float x, M={M}")
        assert_close(native_linear(raw, qt, x, lib=lib), x8 @ Wd.T, what=f"{qt} {build}, int8 x, M={M}")
        assert not compare(native_linear(raw, qt, x, lib=lib), x @ Wd.T, verbose=False)["ok"]   # x was rounded
    bad = raw.copy(); bad[40, 3] ^= 1                                    # one code in row 40
    diff = np.abs(native_linear(bad, qt, x, True, lib) - native_linear(raw, qt, x, True, lib)).max(0)
    assert diff[40] > 0 and (np.delete(diff, 40) == 0).all()


def test_native_kernels_sharp(rng, tmp_path, monkeypatch):
    "A kernel that reads Q4_0's codes with the wrong offset (7 for 8) fails the same check."
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path))
    bad = compile_native(NATIVE_SOURCE.replace("_mm256_set1_epi8(8)", "_mm256_set1_epi8(7)"))
    W = (rng.standard_normal((64, 256)) * 0.05).astype(np.float32)
    raw, x = QUANTIZERS["Q4_0"](W), rng.standard_normal((1, 256)).astype(np.float32)
    r = compare(native_linear(raw, "Q4_0", x, True, bad), x @ dequantize(raw, "Q4_0").T, verbose=False)
    assert not r["ok"], r


@pytest.mark.parametrize("qt", list(NATIVE_TYPES))
def test_avx512_kernels(qt, rng, tmp_path, monkeypatch):
    """Where the CPU has AVX-512 VNNI and VBMI, int8 x goes to the AVX-512 kernels, one row (decoding) and several (a
    prompt): the product with x as quantize_q8 codes it, within float32's tolerance, for block counts that leave 0 to 3
    blocks to the 256-bit tail and row counts that leave rows over from groups of four. Their sums run in another order
    than the AVX2 kernels' (other bits: that path was taken); reading ahead changes no bit. Kernels that take off the
    wrong offset fail, decoding and prompt alike."""
    if not native().avx512_kernels(): pytest.skip("this CPU has no AVX-512 VNNI and VBMI")
    flags = ("-O3", "-march=native")
    avx2, no_ahead = (compile_native(NATIVE_SOURCE, flags + (f,)) for f in ("-DNO_AVX512", "-DAHEAD=0"))
    for K, N in ((32, 5), (96, 37), (416, 37), (480, 4), (1024, 64)):           # 1, 3, 13, 15 and 32 blocks a row
        W = (rng.standard_normal((N, K)) * 0.05).astype(np.float32)
        raw = QUANTIZERS[qt](W)
        for M in (1, 3, 6):
            x = rng.standard_normal((M, K)).astype(np.float32)
            q, d = q8_reference(x)
            want = (q * d[:, None]).reshape(x.shape) @ dequantize(raw, qt).T
            y = native_linear(raw, qt, x)
            assert_close(y, want, what=f"{qt} AVX-512, K={K}, {N} rows of W, {M} of x")
            assert np.array_equal(y, native_linear(raw, qt, x, lib=no_ahead))
            if K == 1024: assert not np.array_equal(y, native_linear(raw, qt, x, lib=avx2))
    wrong = {"Q8_0": [("_mm512_set1_epi8((char)128), x)", "_mm512_set1_epi8((char)127), x)", 1),   # decoding's
                      ("#define OFF_q8_0 128", "#define OFF_q8_0 127", 3)],                          # a prompt's
             "Q4_0": [("e = _mm512_set1_epi8(8)", "e = _mm512_set1_epi8(7)", 1),
                      ("#define OFF_q4_0 8", "#define OFF_q4_0 7", 3)]}[qt]
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path))
    for old, new, M in wrong:
        assert NATIVE_SOURCE.count(old) == 1
        bad = compile_native(NATIVE_SOURCE.replace(old, new))
        x = rng.standard_normal((M, K)).astype(np.float32)
        q, d = q8_reference(x)
        r = compare(native_linear(raw, qt, x, lib=bad), (q * d[:, None]).reshape(x.shape) @ dequantize(raw, qt).T,
                    verbose=False)
        assert not r["ok"], (M, r)


def f32_product(lib, W: np.ndarray, x: np.ndarray) -> np.ndarray:
    "The C kernel f32_f32 of `lib`: x [M, K] @ W.T for float32 W [N, K]."
    return native_product("f32_f32", [(W.ctypes.data, len(W))], torch.from_numpy(x), lib).numpy()


@pytest.mark.parametrize("build", ["vector", "scalar"])
def test_native_f32_kernel(builds, build, rng):
    """float32 weights: 203 rows (eight at a time, three left over, split unevenly between threads), K = 300 (the vector
    loop's tail of 4), 1, 3 and 15 rows of x: numpy's product in float32; one changed weight changes its row only."""
    W = rng.standard_normal((203, 300)).astype(np.float32)
    for M in (1, 3, 15):
        x = rng.standard_normal((M, 300)).astype(np.float32)
        assert_close(f32_product(builds[build], W, x), x.astype(np.float64) @ W.T.astype(np.float64),
                     what=f"f32_f32 {build}, M={M}")
    for r, c in ((7, 299), (201, 0)):                                   # K's tail in a group of rows; a left-over row
        bad = W.copy(); bad[r, c] += 1
        diff = np.abs(f32_product(builds[build], bad, x) - f32_product(builds[build], W, x)).max(0)
        assert diff[r] > 0 and (np.delete(diff, r) == 0).all(), (r, c)


def test_native_f32_kernel_sharp(rng, tmp_path, monkeypatch):
    "A kernel that writes each odd row of a group of eight from the row before's sums, or drops the tail, fails."
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path))
    W = rng.standard_normal((64, 300)).astype(np.float32)
    x = rng.standard_normal((1, 300)).astype(np.float32)
    for old, new in (("y[i] = acc_sum(s[i])", "y[i] = acc_sum(s[i & 6])"), ("x + k, K - k)", "x + k, 0)")):
        assert old in NATIVE_SOURCE
        bad = compile_native(NATIVE_SOURCE.replace(old, new))
        assert not compare(f32_product(bad, W, x), x @ W.T, verbose=False)["ok"], new


def test_linear_torch_takes_the_c_kernel(rng):
    """float32 on the CPU: fewer than NATIVE_F32_ROWS rows of x go to the C kernel (its result to the bit), more to
    oneDNN, and so does a strided W. Three matrices in one call (`linears_torch`) give what three calls give."""
    from minillama.mlp_norm import CPU_LINEARS, linear_torch, linears_torch, onednn_linear
    assert native_f32_linear in CPU_LINEARS
    W = torch.from_numpy(rng.standard_normal((96, 64)).astype(np.float32))
    for M in (1, NATIVE_F32_ROWS - 1, NATIVE_F32_ROWS):
        x = torch.from_numpy(rng.standard_normal((M, 64)).astype(np.float32))
        c = torch.from_numpy(f32_product(native(), W.numpy(), x.numpy()))
        d = onednn_linear()(x, W, None, "none", [], "")
        assert torch.equal(linear_torch(x, W), c if M < NATIVE_F32_ROWS else d), M
        assert_close(linear_torch(x, W), x @ W.T, what=f"linear_torch, {M} rows")
    assert native_f32_linear(x[:1], (W.T.contiguous().T,)) is None               # strided W: declined
    assert native_f32_linear(x[:1], (W,)) is not None
    assert native_f32_linear(x[:1], (W, W.bfloat16())) is None                    # one of them not float32
    Ws = (W, W[:40], W[50:53])                                                    # 96, 40 and 3 rows
    for M in (1, 5, NATIVE_F32_ROWS):
        x = torch.from_numpy(rng.standard_normal((2, M, 64)).astype(np.float32))   # [2, M, 64]
        ys = linears_torch(x, Ws)
        assert [y.shape for y in ys] == [(2, M, 96), (2, M, 40), (2, M, 3)]
        assert all(torch.equal(y, linear_torch(x, W)) for y, W in zip(ys, Ws)), M


def test_quantized_linears_in_one_call(rng):
    "Q8_0 q, k, v in one C call: the same bits as one at a time; a mix of kinds goes one at a time, also right."
    from minillama.mlp_norm import linears_torch
    raws = [QUANTIZERS["Q8_0"]((rng.standard_normal((n, 256)) * 0.05).astype(np.float32)) for n in (64, 24, 24)]
    ws = [NativeQuantWeight(r, "Q8_0", False, torch.float32) for r in raws]
    x = torch.from_numpy(rng.standard_normal((1, 3, 256)).astype(np.float32))
    assert native_quant_linears(x[0], ws) is not None
    ys = linears_torch(x, ws)
    assert all(torch.equal(y, w.linear(x)) for y, w in zip(ys, ws))
    mixed = ws[:2] + [NativeQuantWeight(raws[2], "Q8_0", True, torch.float32)]    # the third with float32 x
    assert native_quant_linears(x[0], mixed) is None
    for y, r in zip(linears_torch(x, mixed), raws):
        assert_close(y, x.numpy() @ dequantize(r, "Q8_0").T, "bfloat16", what="Q8_0, int8 x")


def test_rmsnorm_takes_the_c_kernel(rng, tmp_path, monkeypatch):
    """float32 RMSNorm on the CPU goes to the C kernel: numpy's result within float32's tolerance, rows of sizes from
    0.01 to 100; a kernel that divides by D - 1 instead of D fails the same check."""
    from minillama.mlp_norm import CPU_NORMS, rmsnorm_np, rmsnorm_torch
    from minillama.quant_kernels import native_rmsnorm
    assert native_rmsnorm in CPU_NORMS
    x = (rng.standard_normal((2, 3, 512)) * rng.uniform(0.01, 100, (2, 3, 1))).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(512)).astype(np.float32)
    y = rmsnorm_torch(torch.from_numpy(x), torch.from_numpy(w), 1e-6)
    c = native_rmsnorm(torch.from_numpy(x.reshape(6, 512)), torch.from_numpy(w), 1e-6)
    assert torch.equal(y.reshape(6, 512), c)
    assert torch.equal(native_rmsnorm(torch.from_numpy(x), torch.from_numpy(w), 1e-6), y)   # [..., D] as it lies
    assert_close(y, rmsnorm_np(x, w, 1e-6), what="RMSNorm, C kernel vs numpy")
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path))
    bad = compile_native(NATIVE_SOURCE.replace("(float)(s / D)", "(float)(s / (D - 1))"))
    yb = torch.empty(6, 512)
    bad.rmsnorm(x.ctypes.data, w.ctypes.data, yb.data_ptr(), 6, 512, 1e-6)
    assert not compare(yb.reshape(2, 3, 512), rmsnorm_np(x, w, 1e-6), verbose=False)["ok"]


def test_native_weight_roads(rng):
    "NativeQuantWeight: a few rows through the C kernels, a prompt through the dequantized road, both equal to numpy."
    W = (rng.standard_normal((150, 512)) * 0.05).astype(np.float32)
    raw = QUANTIZERS["Q8_0"](W)
    nw = NativeQuantWeight(raw, "Q8_0", exact=True, out_dtype=torch.float32)
    assert nw.nbytes == raw.nbytes and np.shares_memory(nw.raw, raw)          # the stored blocks, nothing packed
    for M in (1, 3, 40, NATIVE_ROWS + 2):
        x = rng.standard_normal((M, 512)).astype(np.float32)
        assert_close(nw.linear(torch.from_numpy(x)), x @ dequantize(raw, "Q8_0").T, what=f"Q8_0 native, {M} rows")
    fast = NativeQuantWeight(raw, "Q8_0", exact=False, out_dtype=torch.float32)       # int8 x below native_rows
    rows = native_rows(fast.kind)
    assert rows == (AVX512_ROWS["q8_0_q8"] if native().avx512_kernels() else NATIVE_ROWS) and nw.kind == "q8_0_f32"
    assert native_rows(nw.kind) == NATIVE_ROWS                                       # the exact kernels: AVX2's
    for M, road in ((rows - 1, "C"), (rows, "dequantized")):
        x = rng.standard_normal((M, 512)).astype(np.float32)
        r = compare(fast.linear(torch.from_numpy(x)), x @ dequantize(raw, "Q8_0").T, verbose=False)
        assert r["ok"] == (road == "dequantized"), (M, r)               # only the dequantized road keeps float32
    nb = NativeQuantWeight(raw, "Q8_0", exact=False, out_dtype=torch.bfloat16)
    x = rng.standard_normal((2, 512)).astype(np.float32)
    y = nb.linear(torch.from_numpy(x).bfloat16())
    assert y.dtype == torch.bfloat16 and y.shape == (2, 150)
    assert_close(y.float(), x @ dequantize(raw, "Q8_0").T, "bfloat16", what="Q8_0 native, int8 x, bfloat16 out")


def test_native_threads_fork_and_callers(rng):
    """The C kernels' threads: several Python threads calling at once get their own products, and a process forked
    after the threads started makes threads of its own instead of waiting forever on its parent's."""
    import multiprocessing as mp
    from concurrent.futures import ThreadPoolExecutor
    raw = QUANTIZERS["Q8_0"]((rng.standard_normal((333, 256)) * 0.05).astype(np.float32))
    xs = rng.standard_normal((8, 2, 256)).astype(np.float32)
    want = [native_linear(raw, "Q8_0", x) for x in xs]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda x: native_linear(raw, "Q8_0", x), xs))
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    with mp.get_context("fork").Pool(1) as p:
        assert np.array_equal(p.apply_async(native_linear, (raw, "Q8_0", xs[3])).get(timeout=60), want[3])


def test_native_thread_counts(rng):
    """Each product runs on the threads it asks for, more workers starting when asked for more: 1, 2, 3 and 5 threads,
    then 800 products alternating between counts, give the same bits, for float32 and Q8_0 weights, and so do three
    matrices in one job (rows 0:100, 100:180, 180:203, the last with rows left over from groups of four)."""
    lib = native()
    W = rng.standard_normal((203, 96)).astype(np.float32)
    raw, x = QUANTIZERS["Q8_0"](W), rng.standard_normal((2, 96)).astype(np.float32)
    xq, xd = np.empty((2, 96), np.int8), np.empty(6, np.float32)
    lib.quantize_q8(x.ctypes.data, xq.ctypes.data, xd.ctypes.data, x.size)
    parts = [(0, 100), (100, 180), (180, 203)]
    def both(n):
        yf, yq, y3 = (np.empty((2, 203), np.float32) for _ in range(3))
        lib.linear(KINDS.index("f32_f32"), x.ctypes.data, None, yf.ctypes.data, 2, 96, n, W.ctypes.data, 203,
                   None, 0, None, 0)
        lib.linear(KINDS.index("q8_0_q8"), xq.ctypes.data, xd.ctypes.data, yq.ctypes.data, 2, 96, n, raw.ctypes.data,
                   203, None, 0, None, 0)
        lib.linear(KINDS.index("f32_f32"), x.ctypes.data, None, y3.ctypes.data, 2, 96, n,
                   *[v for a, b in parts for v in (W[a:b].ctypes.data, b - a)])
        y1 = np.empty((1, 203), np.float32)                                # one row of x: four rows of W at once
        lib.linear(KINDS.index("q8_0_f32"), x.ctypes.data, None, y1.ctypes.data, 1, 96, n, raw.ctypes.data, 203,
                   None, 0, None, 0)
        return yf, yq, y3, y1
    one = both(1)
    assert_close(one[0], x @ W.T, what="f32_f32 on one thread")
    assert_close(one[2], x @ W.T, what="f32_f32, three matrices in one job")
    assert_close(one[3], x[:1] @ dequantize(raw, "Q8_0").T, what="q8_0_f32, one row of x")
    three = [f32_product(lib, W[a:b], x) for a, b in parts]            # one job per matrix
    assert np.array_equal(one[2], np.concatenate(three, 1))
    for n in (2, 3, 5, 2) + (2, 5, 1, 3) * 200:          # counts changing from job to job: no worker may lag behind
        assert all(np.array_equal(a, b) for a, b in zip(both(n), one)), n


@pytest.mark.parametrize("build", ["vector", "avx2", "scalar"])
def test_native_quantizes_float_x(builds, build, rng):
    """The C `linear` given float32 x and no scales quantizes x itself, into memory it keeps between calls: the same
    bits as x quantized by `quantize_q8` first, for Q8_0 and Q4_0, as x grows (the memory with it) and shrinks again."""
    lib, K = builds[build], 160
    W = rng.standard_normal((45, K)).astype(np.float32)
    for qt in NATIVE_TYPES:
        raw, kind = QUANTIZERS[qt](W), KINDS.index(f"{qt.lower()}_q8")
        for M in (1, 3, 64, 2, 300, 1):
            x = rng.standard_normal((M, K)).astype(np.float32)
            xq, xd = np.empty((M, K), np.int8), np.empty(M * K // 32, np.float32)
            lib.quantize_q8(x.ctypes.data, xq.ctypes.data, xd.ctypes.data, x.size)
            want, got = np.empty((M, 45), np.float32), np.full((M, 45), np.nan, np.float32)
            assert lib.linear(kind, xq.ctypes.data, xd.ctypes.data, want.ctypes.data, M, K, 2, raw.ctypes.data, 45,
                              None, 0, None, 0) == 0
            assert lib.linear(kind, x.ctypes.data, None, got.ctypes.data, M, K, 2, raw.ctypes.data, 45,
                              None, 0, None, 0) == 0
            assert np.array_equal(got, want), (qt, M)
            assert np.abs(want - native_linear(raw, qt, x, exact=True, lib=lib)).max() > 0       # x was rounded


def test_native_quantizes_float_x_sharp(rng, tmp_path, monkeypatch):
    "A `linear` that took float32 x for codes (forgot to quantize it) fails the same comparison."
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path))
    bad = compile_native(NATIVE_SOURCE.replace("quantize_q8(*x, q, d, n);", ""))
    W, x = rng.standard_normal((45, 160)).astype(np.float32), rng.standard_normal((2, 160)).astype(np.float32)
    raw = QUANTIZERS["Q8_0"](W)
    xq, xd = np.empty((2, 160), np.int8), np.empty(10, np.float32)
    bad.quantize_q8(x.ctypes.data, xq.ctypes.data, xd.ctypes.data, x.size)
    want, got = np.empty((2, 45), np.float32), np.empty((2, 45), np.float32)
    bad.linear(KINDS.index("q8_0_q8"), xq.ctypes.data, xd.ctypes.data, want.ctypes.data, 2, 160, 2, raw.ctypes.data,
               45, None, 0, None, 0)
    bad.linear(KINDS.index("q8_0_q8"), x.ctypes.data, None, got.ctypes.data, 2, 160, 2, raw.ctypes.data, 45,
               None, 0, None, 0)
    assert not np.array_equal(got, want)


TORCH_FIRST = """
import warnings, numpy as np
{first}
import minillama, torch
from minillama.model import make_ops
from minillama.quant import QUANTIZERS, dequantize
from minillama.quant_kernels import omp_spins, native_threads, native_f32_linear, quant_weight, NativeQuantWeight
torch.set_num_threads(2)
W = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32) * 0.1
x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    w = quant_weight(make_ops("torch", "cpu", "float32"), QUANTIZERS["Q8_0"](W), "Q8_0")
    y = w.linear(torch.from_numpy(x)).numpy()
ref = x @ dequantize(QUANTIZERS["Q8_0"](W), "Q8_0").T
warned = sum("OpenMP" in str(c.message) for c in caught)
print(omp_spins(), native_threads(), native_f32_linear(torch.from_numpy(x), (torch.from_numpy(W),)) is None,
      type(w).__name__, float(np.abs(y - ref).max() / np.abs(ref).max()), warned)
"""


@pytest.mark.parametrize("first", ["torch", "minillama"])
def test_torch_imported_first(first):
    """torch imported before minillama: its OpenMP threads spin between ops, so float32 stays on oneDNN (which runs on
    those threads), the quantized C kernels run on one thread, and one warning says how to get every core back.
    minillama first: every core, no warning. Both give the right product."""
    import subprocess, sys
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    r = subprocess.run([sys.executable, "-c", TORCH_FIRST.format(first=f"import {first}")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    spins, threads, declined, kind, err, warned = r.stdout.split()
    assert kind == "NativeQuantWeight" and float(err) < 1e-5
    if first == "torch": assert (spins, threads, declined, warned) == ("True", "1", "True", "1"), r.stdout
    else: assert (spins, threads, declined, warned) == ("False", str(os.cpu_count()), "False", "0"), r.stdout


def test_without_a_compiler(tmp_path, monkeypatch):
    "No working C compiler: one warning line, and torch's int4 kernel takes the quantized matrices; the same when off."
    from minillama.model import make_ops
    raw = QUANTIZERS["Q4_0"]((np.ones((64, 64)) * 0.1).astype(np.float32))
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path)); monkeypatch.setenv("CC", "false")
    native.cache_clear()
    try:
        with pytest.warns(UserWarning, match=r"no C compiler \(false\) could build the fused kernels"):
            assert native() is None
        w = quant_weight(make_ops("torch", "cpu"), raw, "Q4_0")
        assert type(w) is TorchQuantWeight and not list(tmp_path.glob("*.so"))
        x, W = torch.ones(1, 64), torch.eye(64)
        assert native_f32_linear(x, (W,)) is None                           # float32: oneDNN instead
        assert_close(minillama.mlp_norm.linear_torch(x, W), x, what="float32 without the C kernel")
        assert_close(minillama.mlp_norm.rmsnorm_torch(x, torch.ones(64), 1e-6), x, what="RMSNorm without C")
        monkeypatch.delenv("CC"); monkeypatch.setenv("MINILLAMA_NATIVE", "0"); native.cache_clear()
        assert native() is None and type(quant_weight(make_ops("torch", "cpu"), raw, "Q4_0")) is TorchQuantWeight
    finally:
        monkeypatch.undo(); native.cache_clear()
    assert type(quant_weight(make_ops("torch", "cpu"), raw, "Q4_0")) is NativeQuantWeight


def test_compiler_without_avx512(tmp_path, monkeypatch):
    """A compiler that builds for this CPU but not its AVX-512 kernels (too old for their intrinsics): native() builds
    the rest with -march=native, and the products are still right."""
    cc = tmp_path / "cc.sh"                       # fails on -march=native unless -DNO_AVX512 comes with it
    cc.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n'
                  'case "$*" in *-march=native*) case "$*" in *NO_AVX512*) ;; *) exit 1;; esac;; esac\nexec cc "$@"\n')
    cc.chmod(0o755)
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path)); monkeypatch.setenv("CC", str(cc))
    native.cache_clear()
    try:
        lib = native()
        assert lib is not None and lib.avx512_kernels() == 0
        calls = (tmp_path / "calls").read_text().splitlines()
        assert len(calls) == 2 and "-march=native -DNO_AVX512" in calls[1], calls     # the second try built it
        W = (np.random.default_rng(0).standard_normal((37, 416)) * 0.05).astype(np.float32)
        raw, x = QUANTIZERS["Q4_0"](W), np.random.default_rng(1).standard_normal((1, 416)).astype(np.float32)
        assert_close(native_linear(raw, "Q4_0", x, exact=True, lib=lib), x @ dequantize(raw, "Q4_0").T,
                     what="Q4_0 built without the AVX-512 kernels")
    finally:
        monkeypatch.undo(); native.cache_clear()


def test_native_without_avx512_asked_for(tmp_path, monkeypatch):
    """MINILLAMA_NATIVE=noavx512 builds the kernels as for a CPU without AVX-512 (-DNO_AVX512 on the first try), whose
    prompts leave the C kernels at NATIVE_ROWS, and the products are still right."""
    cc = tmp_path / "cc.sh"
    cc.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\nexec cc "$@"\n')
    cc.chmod(0o755)
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path)); monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("MINILLAMA_NATIVE", "noavx512")
    import minillama.quant_kernels as qk
    native.cache_clear(); qk._avx512.cache_clear()
    try:
        lib = native()
        assert lib is not None and lib.avx512_kernels() == 0
        calls = (tmp_path / "calls").read_text().splitlines()
        assert len(calls) == 1 and "-march=native -DNO_AVX512" in calls[0], calls
        assert native_rows("q8_0_q8") == native_rows("q4_0_q8") == NATIVE_ROWS
        W = (np.random.default_rng(0).standard_normal((37, 416)) * 0.05).astype(np.float32)
        raw, x = QUANTIZERS["Q8_0"](W), np.random.default_rng(1).standard_normal((3, 416)).astype(np.float32)
        assert_close(native_linear(raw, "Q8_0", x, exact=True), x @ dequantize(raw, "Q8_0").T,
                     what="Q8_0 built without the AVX-512 kernels, as asked")
    finally:
        monkeypatch.undo(); native.cache_clear(); qk._avx512.cache_clear()
    assert native_rows("q8_0_q8") == (AVX512_ROWS["q8_0_q8"] if native().avx512_kernels() else NATIVE_ROWS)


@pytest.mark.parametrize("qt", ["q8_0", "q4_0"])
def test_quantized_file(quantized, qt):
    files, d = quantized
    g, r = GGUFFile(files[qt]), gguf.GGUFReader(files[qt])
    f32 = GGUFFile(minillama.gguf_llama.convert_to_gguf(shipped_model(), d / f"f32_{qt}.gguf", progress=False))
    for t in r.tensors:                                            # llama.cpp's reader, llama.cpp's reference bytes
        want = ref_quantize(np.array(f32.tensor(t.name)), getattr(T, qt.upper())) if len(g.tensors[t.name]["shape"]) == 2 else f32.tensor(t.name)
        assert t.tensor_type.name == (qt.upper() if len(g.tensors[t.name]["shape"]) == 2 else "F32")
        assert np.array_equal(np.asarray(t.data).reshape(want.shape).view(want.dtype), want), t.name
    ratio = files[qt].stat().st_size / (d / f"f32_{qt}.gguf").stat().st_size
    assert {"q8_0": 0.25 < ratio < 0.30, "q4_0": 0.13 < ratio < 0.17}[qt], ratio


@pytest.mark.parametrize("qt", ["q8_0", "q4_0", "q4_k"])
def test_quantized_inference(quantized, qt):
    "Weights stay quantized on numpy and on torch; numpy == torch; and both equal transformers on the dequantized weights."
    from transformers import LlamaForCausalLM
    files, _ = quantized
    mn, mt = minillama.load(files[qt], "numpy"), minillama.load(files[qt], "torch", device="cpu", dtype="float32")
    assert isinstance(mn.w.layers[0].w_down, QuantWeight) and isinstance(mn.w.tok_embeddings, QuantWeight)
    kind = NativeQuantWeight if qt in ("q8_0", "q4_0") else TorchQuantWeight          # the C kernels, or int4 planes
    assert type(mt.w.layers[0].wq) is kind and type(mt.w.layers[0].w_down) is kind
    held = sum(a.nbytes for _, a in mn.w.items() if isinstance(a, QuantWeight))
    assert held < 0.3 * sum(np.prod(a.shape) * 4 for _, a in mn.w.items() if isinstance(a, QuantWeight))
    held_t = sum(a.nbytes for _, a in mt.w.items() if isinstance(a, TorchQuantWeight))
    assert held_t < 0.5 * sum(np.prod(a.shape) * 4 for _, a in mt.w.items() if isinstance(a, TorchQuantWeight))
    ids = np.array(minillama.Tokenizer.from_file(files[qt]).encode("The \"while\" statement is used for", bos=True))
    ln = mn.forward(ids)
    assert_close(mt.forward(ids), ln, what=f"{qt}: torch (dtype float32 asked for: exact) vs numpy")
    md = minillama.load(files[qt], "torch", device="cpu")       # the default: int8 activations or int4 kernels in bf16
    assert (md.w.layers[0].wq.exact is False) if kind is NativeQuantWeight else md.w.layers[0].wq.dtype == torch.bfloat16
    assert md.forward(ids).dtype == torch.float32
    assert_close(md.forward(ids), ln, "bfloat16", what=f"{qt}: torch default (fast) vs numpy")
    assert not compare(md.forward(ids), ln, verbose=False)["ok"]                     # and not exact
    mb = minillama.load(files[qt], "torch", device="cpu", dtype="bfloat16")           # torch's fast int4 kernels
    assert_close(mb.forward(ids), ln, "bfloat16", what=f"{qt}: torch bfloat16 vs numpy")
    hf = LlamaForCausalLM.from_pretrained(shipped_model(), dtype=torch.float32).eval()
    c = mn.cfg
    with torch.no_grad():
        for name, p in hf.named_parameters():
            ours = minillama.checkpoint.hf_name
            key = next(n for n, _ in mn.w.items() if ours(n) == name)
            a = dict(mn.w.items())[key]
            a = a.dequantized() if isinstance(a, QuantWeight) else np.asarray(a)
            if key.endswith(".wq"): a = permute_qk_interleaved_to_half(a, c.n_heads)
            if key.endswith(".wk"): a = permute_qk_interleaved_to_half(a, c.n_kv_heads)
            p.copy_(torch.from_numpy(np.ascontiguousarray(a)))
        ref = hf(torch.from_numpy(ids)[None]).logits[0]
    assert_close(ln, ref, what=f"{qt}: minillama (kept quantized) vs transformers on the dequantized weights")


def test_interrupted_quantize_leaves_nothing(tmp_path):
    "A tensor that cannot be quantized half way through: an error naming it, and no output file at all."
    from minillama.gguf import write_gguf
    ok = np.ones((4, 64), np.float32)
    write_gguf(tmp_path / "s.gguf", {"general.architecture": "llama"},
               {"a.weight": (ok, "F32"), "b.weight": (np.ones((4, 48), np.float32), "F32")}, progress=False)
    with pytest.raises(MiniLlamaError, match="'b.weight'.*row length 48"):
        quantize_gguf(tmp_path / "s.gguf", tmp_path / "q.gguf", "q4_0", progress=False)
    assert not (tmp_path / "q.gguf").exists() and not list(tmp_path.glob("*.tmp"))


def test_cli_quantize(tmp_path, capsys):
    assert main(["quantize", str(shipped_model()), str(tmp_path / "q.gguf"), "--type", "q4_0"]) == 0
    assert main(["generate", "Assert", "--model", str(tmp_path / "q.gguf"), "--max-new-tokens", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.count("Assert") >= 1
    assert main(["generate", "Assert", "--model", str(tmp_path / "q.gguf"), "--max-new-tokens", "5", "--backend", "torch",
                 "--device", "cpu", "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.startswith("Assert")


def test_quant_weight_threads_hold_blas_to_one(rng, monkeypatch):
    """While numpy's quantized product shares its chunks of rows out between threads, each BLAS call runs on the thread
    that makes it (OpenBLAS's own threads on top of ours had made prompts 1.7-1.8x slower), and BLAS gets its threads
    back afterwards."""
    import minillama.quant_kernels as qk
    blas = qk._blas()
    if qk.THREADS < 2 or not blas.lib_controllers: pytest.skip("one core, or no BLAS that threadpoolctl knows")
    threads = lambda: max(i["num_threads"] for i in blas.info())
    before, seen, real = threads(), [], qk.linear_np
    monkeypatch.setattr(qk, "linear_np", lambda x, W: (seen.append(threads()), real(x, W))[1])
    W = (rng.standard_normal((300, 256)) * 0.05).astype(np.float32)
    raw = QUANTIZERS["Q8_0"](W)
    x = rng.standard_normal((8, 256)).astype(np.float32)
    qw = QuantWeight(raw, "Q8_0", chunk_bytes=64 * 256 * 4)                   # five chunks, for two threads or more
    assert_close(qw.linear(x), x @ dequantize(raw, "Q8_0").T, what="Q8_0, chunks on threads")
    assert len(seen) >= 5 and set(seen) == {1}, seen
    assert threads() == before
