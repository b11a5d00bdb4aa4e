"""Process-wide memory settings that importing minillama makes (notebook 14), and how a user turns them off."""
import ctypes, os, subprocess, sys
import pytest


def _heap_kept(**env) -> str:
    "HEAP_KEPT as a fresh `import minillama` sets it, under the environment we have, less malloc settings, plus `env`."
    base = {k: v for k, v in os.environ.items()
            if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "MINILLAMA_KEEP_HEAP")}
    r = subprocess.run([sys.executable, "-c", "import minillama, minillama.memory as m; print(m.HEAP_KEPT)"],
                       env={**base, **env}, capture_output=True, text=True, check=True)
    return r.stdout.strip()


def test_heap_kept_unless_told_otherwise():
    "glibc's heap is kept by default (notebook 14); MINILLAMA_KEEP_HEAP=0 or malloc settings of the user's own win."
    if not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"): pytest.skip("not glibc: nothing is set")
    assert _heap_kept() == "True"
    assert _heap_kept(MINILLAMA_KEEP_HEAP="0") == "False"
    assert _heap_kept(MALLOC_TRIM_THRESHOLD_="131072") == "False"
    assert _heap_kept(MALLOC_MMAP_THRESHOLD_="131072") == "False"
    assert _heap_kept(GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072") == "False"
