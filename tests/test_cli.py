"`minillama verify`: the report, the exit codes, the one-line errors."
import subprocess
import sys

from minillama.cli import main


def test_verify_report(hf_dir, capsys):
    d, _ = hf_dir("llama3")
    assert main(["verify", str(d), "--tokens", "40", "--generate", "8"]) == 0
    out = capsys.readouterr().out
    rows = [l.split() for l in out.splitlines() if len(l.split()) == 7 and l.split()[0] != "stage"]   # name + 3 x (max, mean)
    stages = [r[0] for r in rows]
    assert all(float(x) < 1e-3 for r in rows for x in r[1:])
    assert stages == ["embed", "block.0", "block.1", "norm", "logits"]
    assert "greedy 8 tokens: numpy == transformers, torch == transformers ok" in out and out.strip().endswith("PASS")


def test_verify_missing_dir(capsys):
    assert main(["verify", "/no/such/model"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/no/such/model" in err and "Traceback" not in err


def test_usage_error_exits_2():
    r = subprocess.run(["minillama", "verify", "--tokens", "many"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid int value" in r.stderr


def test_installed_command():
    r = subprocess.run(["minillama", "verify", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--random" in r.stdout


# --- the newcomer's bug list ------------------------------------------------------------------------------------------

def test_verify_prompt_with_token_zero(tmp_path):
    "transformers is given an all-ones attention mask: a prompt that contains token 0 is not masked as padding."
    import numpy as np
    from minillama.verify import random_hf_llama, verify
    random_hf_llama(tmp_path, "llama3", seed=3)
    ids = np.random.default_rng(3).integers(0, 512, size=64)
    ids[[0, 5, 17]] = 0
    r = verify(tmp_path, ids=ids, n_generate=8, report=lambda s: None)
    assert r["ok"] and r["greedy"]["hf"] == r["greedy"]["numpy"], r["greedy"]


def test_verify_random_cleans_up(capsys, monkeypatch, tmp_path):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["verify", "--random", "llama2", "--seed", "3", "--tokens", "16", "--generate", "4"]) == 0
    assert list(tmp_path.iterdir()) == [] and capsys.readouterr().out.strip().endswith("PASS")


def test_verify_bad_path_fails_before_importing_torch():
    code = ("import sys; from minillama.cli import main; rc = main(['verify', '/bad/path']); "
            "print(rc, 'transformers' in sys.modules, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["1", "False", "False"] and r.stderr.count("\n") == 1, (r.stdout, r.stderr)


def test_requantizing_is_refused_or_relabelled(tmp_path, capsys):
    from minillama.gguf import GGUFFile
    from minillama.tiny_model import shipped_model
    q4 = tmp_path / "q4.gguf"
    assert main(["quantize", str(shipped_model()), str(q4), "--type", "q4_0"]) == 0
    assert main(["quantize", str(q4), str(tmp_path / "q8.gguf"), "--type", "q8_0"]) == 1
    assert "is Q4_0 already" in capsys.readouterr().err and not (tmp_path / "q8.gguf").exists()
    assert main(["quantize", str(q4), str(tmp_path / "q8.gguf"), "--type", "q8_0", "--requantize"]) == 0
    g = GGUFFile(tmp_path / "q8.gguf")
    assert {i["type"] for i in g.tensors.values() if len(i["shape"]) == 2} == {"Q8_0"}
    assert g.metadata["general.file_type"] == 7


def test_outputs_are_not_overwritten_without_force(tmp_path, capsys):
    from minillama.tiny_model import shipped_model
    for args in (["convert", str(shipped_model()), str(tmp_path / "m.gguf")],
                 ["quantize", str(shipped_model()), str(tmp_path / "q.gguf")],
                 ["convert", str(shipped_model()), str(tmp_path / "shards"), "--shard-layers"]):
        assert main(args) == 0
        before = sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*"))
        assert main(args) == 1 and "already exists" in capsys.readouterr().err
        assert sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*")) == before
        assert main(args + ["--force"]) == 0
    assert not list(tmp_path.rglob("*.tmp"))


def test_unwritable_outputs_name_the_users_path(capsys):
    from minillama.tiny_model import shipped_model
    for dst, extra in (("/sys/m.gguf", []), ("/nonexistent/m.gguf", []), ("/sys/shards", ["--shard-layers"])):
        assert main(["convert", str(shipped_model()), dst] + extra) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and dst in err and ".tmp" not in err, err


def test_context_limit_is_reported(capsys):
    assert main(["generate", "The", "--max-new-tokens", "100000", "--seed", "0", "--ignore-eos"]) == 0
    err = capsys.readouterr().err
    assert "context of 512 tokens is full" in err and err.count("\n") == 1


def test_generate_stops_at_eos_unless_ignored(tmp_path, capsys):
    "A GGUF whose end-of-sequence id is the 4th greedy token: generation stops there, and goes on with --ignore-eos."
    import minillama
    from minillama.gguf import GGUFFile, write_gguf, UINT32
    from minillama.gguf_llama import convert_to_gguf
    from minillama.tiny_model import shipped_model
    src = GGUFFile(convert_to_gguf(shipped_model(), tmp_path / "m.gguf", progress=False))
    tok = minillama.Tokenizer.from_file(src.path)
    greedy = list(minillama.load(src.path).generate(tok.encode("Assert statements", bos=True), 20, temperature=0))
    eos = greedy[3]
    assert eos not in greedy[:3]
    md = {**src.typed_metadata(), "tokenizer.ggml.eos_token_id": (UINT32, eos)}
    write_gguf(tmp_path / "eos.gguf", md, {k: (src.tensor(k), i["type"]) for k, i in src.tensors.items()}, progress=False)
    outs = {}
    for extra in ([], ["--ignore-eos"]):
        argv = ["generate", "Assert statements", "--model", str(tmp_path / "eos.gguf"), "--temperature", "0",
                "--max-new-tokens", "20"]
        assert main(argv + extra) == 0
        outs[bool(extra)] = capsys.readouterr().out.strip()
    assert outs[False] == tok.decode(tok.encode("Assert statements", bos=True) + greedy[:3]).strip()
    assert outs[True] == tok.decode(tok.encode("Assert statements", bos=True) + greedy).strip()


def test_verify_a_gguf_file_quantized_too(tmp_path, capsys):
    "transformers loads the GGUF (dequantized to float32) and the per-stage report runs against it."
    from minillama.tiny_model import shipped_model
    for args in (["convert", str(shipped_model()), str(tmp_path / "f32.gguf")],
                 ["quantize", str(shipped_model()), str(tmp_path / "q4_0.gguf"), "--type", "q4_0"]):
        assert main(args) == 0
    for f in ("f32.gguf", "q4_0.gguf"):
        capsys.readouterr()
        assert main(["verify", str(tmp_path / f), "--tokens", "32", "--generate", "4"]) == 0, f
        out = capsys.readouterr().out
        assert "logits numpy vs hf" in out and out.strip().endswith("PASS")
