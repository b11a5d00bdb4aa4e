"`minillama verify`: the report, the exit codes, the one-line errors."
import subprocess

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
