"Sampling: the filters do what they say, seeds reproduce, draws follow the distribution."
import numpy as np
import pytest
from minillama.generation import filter_probs, sample_logits


@pytest.fixture
def logits(rng):
    return rng.normal(size=100) * 3


def test_greedy_is_argmax(logits):
    assert sample_logits(logits, temperature=0) == int(np.argmax(logits))


def test_top_k_keeps_exactly_k(logits):
    for k in (1, 5, 37):
        p = filter_probs(logits, top_k=k)
        assert (p > 0).sum() == k and set(np.flatnonzero(p)) == set(np.argsort(-logits)[:k])
        assert abs(p.sum() - 1) < 1e-12


def test_top_p_keeps_smallest_prefix(logits):
    full = filter_probs(logits)
    order = np.argsort(-full)
    for top_p in (0.1, 0.5, 0.9, 0.999):
        p = filter_probs(logits, top_p=top_p)
        kept = np.flatnonzero(p)
        n = len(kept)
        assert set(kept) == set(order[:n])
        assert full[order[:n]].sum() >= top_p > full[order[:n - 1]].sum()


def test_temperature_sharpens_and_flattens(logits):
    ent = lambda p: -(p[p > 0] * np.log(p[p > 0])).sum()
    assert ent(filter_probs(logits, 0.5)) < ent(filter_probs(logits, 1.0)) < ent(filter_probs(logits, 2.0))


def test_seed_reproduces(logits):
    draws = lambda s: [sample_logits(logits, 0.8, 40, 0.95, r) for r in [np.random.default_rng(s)] for _ in range(50)]
    assert draws(1) == draws(1) and draws(1) != draws(2)


def test_draws_follow_distribution(logits):
    target = filter_probs(logits, 1.3, 20, 0.9)
    n, r = 30000, np.random.default_rng(5)
    freq = np.bincount([sample_logits(logits, 1.3, 20, 0.9, r) for _ in range(n)], minlength=100) / n
    se = np.sqrt(target * (1 - target) / n)
    worst = np.max(np.abs(freq - target) / np.maximum(se, 1e-12))
    print(f"worst deviation {worst:.2f} standard errors")
    assert worst < 5 and np.all(freq[target == 0] == 0)
