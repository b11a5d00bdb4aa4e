"""llama.cpp as the benchmarks' reference: one way to load a GGUF in llama-cpp-python and time it, shared by
bench_forward.py and bench_quant.py. Not a benchmark itself."""
import os, time
import numpy as np


def llama_cpp_installed() -> bool:
    "Whether llama-cpp-python is installed; where it is not, a line says so and what that leaves out of the run."
    try: import llama_cpp  # noqa: F401
    except ImportError:
        print("llama-cpp-python is not installed here: no llama.cpp reference in this run, so no ratio to llama.cpp "
              "(pip install llama-cpp-python compiles it, about 8 minutes)")
        return False
    return True


def llama_cpp_model(path):
    "A llama_cpp.Llama for the GGUF at `path` with as many threads as cores, or None without llama-cpp-python."
    try: from llama_cpp import Llama
    except ImportError: return None
    n = os.cpu_count() or 1
    return Llama(model_path=str(path), n_ctx=512, n_batch=512, n_threads=n, n_threads_batch=n, verbose=False)


def llama_cpp_speeds(llm, prompt: list[int], decode_after: list[int], n: int) -> tuple[float, float]:
    """(prefill, decode) tokens/s: `prompt` in one eval; `n` greedy tokens, one eval each, after `decode_after`
    (best of two each)."""
    def prefill(p):
        llm.reset(); t = time.perf_counter(); llm.eval(p); return time.perf_counter() - t
    def decode():
        prefill(decode_after); t = time.perf_counter()
        for _ in range(n): llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        return time.perf_counter() - t
    decode()                                                         # warm-up
    return len(prompt) / min(prefill(prompt) for _ in range(2)), n / min(decode() for _ in range(2))
