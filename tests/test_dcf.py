"""DCF keys: Eval_0 + Eval_1 = β·1{x < α} at every width, on edges and random values."""

import numpy as np
import pytest
import torch

from ringlet.prng import AesCtrStream
from ringlet.protocols.fss import dcf

SEED = bytes(range(16))


def _domain(width, n, rng):
    top = 1 << width if width < 64 else None
    if top is None:
        return torch.from_numpy(rng.integers(-(2 ** 63), 2 ** 63 - 1, n, dtype=np.int64))
    return torch.from_numpy(rng.integers(0, top, n, dtype=np.int64))


def _less(x, a, width):
    if width < 64:
        return x < a
    return x.numpy().view(np.uint64) < a.numpy().view(np.uint64)


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8, 13, 20, 32, 47, 63, 64])
def test_two_evaluations_add_up_to_beta_below_alpha(width):
    rng = np.random.default_rng(width)  # test data only
    n = 600
    alpha, x = _domain(width, n, rng), _domain(width, n, rng)
    top = (1 << width) - 1 if width < 64 else -1
    edges = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (top, top), 4: (top, 0), 5: (0, top)}
    for i, (a, v) in edges.items():
        alpha[i], x[i] = a, v
    x[10:60] = alpha[10:60]                            # x = α: not below
    if width > 1:
        x[60:110] = alpha[60:110] - 1                  # just below (may wrap to the top: then not)
        x[110:160] = alpha[110:160] + 1
        if width < 64:
            x[60:160] = x[60:160].clamp(0, top)
    beta = torch.from_numpy(rng.integers(-(2 ** 63), 2 ** 63 - 1, n, dtype=np.int64))
    beta[0] = 1
    k0, k1 = dcf.keygen(alpha, beta, width, AesCtrStream(SEED))
    out = dcf.evaluate(k0, x) + dcf.evaluate(k1, x)
    want = torch.where(torch.from_numpy(np.asarray(_less(x, alpha, width))), beta, torch.zeros_like(beta))
    assert torch.equal(out, want)
    assert k0.nbytes() == k1.nbytes() == n * (24 + 24 * width) + (2 * width * n + 7) // 8


def test_each_key_alone_looks_random_and_evaluation_costs_2n_plus_1_blocks():
    n, width = 2000, 16
    rng = np.random.default_rng(0)  # test data only
    alpha = _domain(width, n, rng)
    prg = dcf.Prg()
    k0, k1 = dcf.keygen(alpha, torch.ones(n, dtype=torch.int64), width, AesCtrStream(SEED), prg)
    assert prg.blocks == 2 * width * n * 4 + 2 * n  # both trees: 2 seed + 2 payload blocks a level
    ev = dcf.Prg()
    share = dcf.evaluate(k0, torch.zeros(n, dtype=torch.int64), ev)
    assert ev.blocks == 2 * width * n + n  # the path: its child and its payload block, + the leaf
    # one party's output on its own is a uniform-looking word, whatever the comparison says
    assert 0.45 < float((share & 1).double().mean()) < 0.55


def test_bad_inputs_are_clear_errors():
    s = AesCtrStream(SEED)
    with pytest.raises(ValueError, match="1..64"):
        dcf.keygen(torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), 0, s)
    with pytest.raises(ValueError, match=r"\[0, 2\^4\)"):
        dcf.keygen(torch.tensor([16]), torch.tensor([1]), 4, s)
    k0, _ = dcf.keygen(torch.tensor([3, 4]), torch.tensor([1, 1]), 4, s)
    with pytest.raises(ValueError, match="2 keys but 3 inputs"):
        dcf.evaluate(k0, torch.tensor([1, 2, 3]))


def test_roots_drawn_by_each_holder_from_its_own_stream_give_the_same_keys():
    """A dealer that shares a stream with each server derives the same roots: only the common
    correction words need to travel."""
    n, width = 300, 12
    rng = np.random.default_rng(5)  # test data only
    alpha, x = _domain(width, n, rng), _domain(width, n, rng)
    beta = torch.from_numpy(rng.integers(-(2 ** 63), 2 ** 63 - 1, n, dtype=np.int64))
    seeds = (bytes(range(16)), bytes(range(1, 17)))
    roots = tuple(dcf.root_seeds(AesCtrStream(s), n) for s in seeds)
    k0, k1 = dcf.keygen(alpha, beta, width, roots=roots)
    assert np.array_equal(k0.seed, dcf.root_seeds(AesCtrStream(seeds[0]), n))
    assert np.array_equal(k0.cw_seed, k1.cw_seed) and np.array_equal(k0.cw_v, k1.cw_v)
    out = dcf.evaluate(k0, x) + dcf.evaluate(k1, x)
    assert torch.equal(out, torch.where(x < alpha, beta, torch.zeros_like(beta)))
    with pytest.raises(ValueError, match="root seeds or a CSPRNG stream"):
        dcf.keygen(alpha, beta, width)


@pytest.mark.parametrize("width,payloads", [(1, 2), (7, 3), (16, 2), (63, 3), (64, 17)])
def test_vector_payloads_add_up_word_by_word(width, payloads):
    rng = np.random.default_rng(100 + width)  # test data only
    n = 400
    alpha, x = _domain(width, n, rng), _domain(width, n, rng)
    x[:50] = alpha[:50]
    beta = torch.from_numpy(rng.integers(-(2 ** 63), 2 ** 63 - 1, (n, payloads), dtype=np.int64))
    prg = dcf.Prg()
    k0, k1 = dcf.keygen(alpha, beta, width, AesCtrStream(SEED), prg)
    b = (payloads + 1) // 2
    assert prg.blocks == 2 * width * n * (2 + 2 * b) + 2 * n * b  # both trees + both leaf conversions
    ev = dcf.Prg()
    out = dcf.evaluate(k0, x, ev) + dcf.evaluate(k1, x, ev)
    assert ev.blocks == 2 * (width * n * (1 + b) + n * b)
    below = torch.from_numpy(np.asarray(_less(x, alpha, width)))[:, None]
    assert torch.equal(out, torch.where(below, beta, torch.zeros_like(beta)))
    # what travels: seeds and control bits per level, P payload words of ℓ bits per level and leaf
    assert k0.nbytes(payload_bits=40, roots=False) == (
        16 * width * n + ((width + 1) * n * payloads * 40 + 7) // 8 + (2 * width * n + 7) // 8)


def test_chunk_boundaries_and_an_odd_count_of_keys():
    """More keys than one chunk, a count that is not a multiple of 8 (the packed control bits)."""
    n, width = dcf.CHUNK + 13, 5
    rng = np.random.default_rng(7)  # test data only
    alpha, x = _domain(width, n, rng), _domain(width, n, rng)
    beta = torch.from_numpy(rng.integers(-(2 ** 63), 2 ** 63 - 1, (n, 3), dtype=np.int64))
    k0, k1 = dcf.keygen(alpha, beta, width, AesCtrStream(SEED))
    assert k0.cw_t.shape == (width, 2, (n + 7) // 8)
    out = dcf.evaluate(k0, x) + dcf.evaluate(k1, x)
    assert torch.equal(out, torch.where((x < alpha)[:, None], beta, torch.zeros_like(beta)))


@pytest.mark.parametrize("width,payloads,n", [(1, 1, 9), (7, 3, 5000), (63, 3, 1500), (64, 2, 1030),
                                              (20, 4, 2049)])
def test_native_evaluation_equals_numpy_bit_for_bit(width, payloads, n):
    """Every build this CPU runs (VAES + AVX-512F, AES-NI), on one thread and on two."""
    from ringlet.protocols.fss import native as dcf_native
    kinds = [k for k in dcf_native.KINDS if dcf_native.load(k) is not None]
    if not kinds:
        pytest.skip("no C compiler or no AES-NI here: numpy only")
    rng = np.random.default_rng(width * 7 + payloads)  # test data only
    alpha, x = _domain(width, n, rng), _domain(width, n, rng)
    beta = torch.from_numpy(rng.integers(-(2 ** 63), 2 ** 63 - 1, (n, payloads), dtype=np.int64))
    keys = dcf.keygen(alpha, beta, width, AesCtrStream(SEED))
    threads = torch.get_num_threads()
    try:
        for key in keys:
            want = dcf.evaluate(key, x, native=False)
            for kind in kinds:
                for t in (1, 2):
                    torch.set_num_threads(t)
                    assert torch.equal(dcf.evaluate(key, x, native=kind), want), (kind, t)
    finally:
        torch.set_num_threads(threads)
    out = dcf.evaluate(keys[0], x) + dcf.evaluate(keys[1], x)
    below = torch.from_numpy(np.asarray(_less(x, alpha, width)))[:, None]
    assert torch.equal(out.view(n, -1), torch.where(below, beta, torch.zeros_like(beta)))


def test_without_a_compiler_numpy_evaluates(monkeypatch, tmp_path):
    from ringlet.protocols.fss import native as dcf_native
    if not dcf_native._cpu_has_aes():
        pytest.skip("no AES-NI here: numpy without trying a compiler")
    monkeypatch.setenv("RINGLET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    dcf_native.load.cache_clear()
    try:
        with pytest.warns(UserWarning, match="cannot compile the native DCF"):
            assert dcf_native.load() is None
        n, width = 300, 9
        rng = np.random.default_rng(3)  # test data only
        alpha, x = _domain(width, n, rng), _domain(width, n, rng)
        k0, k1 = dcf.keygen(alpha, torch.ones(n, dtype=torch.int64), width, AesCtrStream(SEED))
        assert torch.equal(dcf.evaluate(k0, x) + dcf.evaluate(k1, x), (x < alpha).to(torch.int64))
    finally:
        dcf_native.load.cache_clear()
