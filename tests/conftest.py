import json
import numpy as np
import pytest
import minillama  # noqa: F401  before torch, as the README asks: torch's OpenMP threads then sleep between ops
import torch

torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    "make(style, **overrides) -> directory of a saved random transformers Llama (cached per configuration)."
    from minillama.verify import random_hf_llama
    cache = {}

    def make(style="llama2", seed=0, **overrides):
        key = (style, seed, json.dumps(overrides, sort_keys=True))
        if key not in cache:
            d = tmp_path_factory.mktemp(style)
            cache[key] = (d, random_hf_llama(d, style, seed=seed, **overrides))
        return cache[key]
    return make


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
