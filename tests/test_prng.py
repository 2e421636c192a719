import re
from pathlib import Path

import pytest
import torch

from ringlet.prng import AesCtrStream, derive_seed, new_seed


def test_same_seed_same_stream_regardless_of_chunking():
    seed = bytes(range(16))
    a = AesCtrStream(seed)
    parts = torch.cat([a.int64(5), a.int64((2, 3)).reshape(-1), a.int64(100)])
    b = AesCtrStream(seed).int64(111)
    assert torch.equal(parts, b)


def test_known_answer_aes_ctr():
    # AES-128 of a zero block under the all-zero key is 66e94bd4ef8a2c3b884cfa59ca342b2e (FIPS-197)
    got = AesCtrStream(bytes(16)).random_bytes(16)
    assert got.hex() == "66e94bd4ef8a2c3b884cfa59ca342b2e"


def test_different_seeds_differ_and_bits_are_balanced():
    a, b = AesCtrStream(new_seed()).int64(1000), AesCtrStream(new_seed()).int64(1000)
    assert not torch.equal(a, b)
    bits = AesCtrStream(new_seed()).bits(100_000)
    assert set(bits.unique().tolist()) == {0, 1}
    assert abs(bits.float().mean().item() - 0.5) < 0.01  # ~6 standard deviations


def test_below_and_derive():
    x = AesCtrStream(bytes(16)).below(10_000, 5)
    assert int(x.min()) >= 0 and int(x.max()) < 32
    assert derive_seed(bytes(16), "a") != derive_seed(bytes(16), "b")
    assert len(derive_seed(bytes(16), "a")) == 16


def test_bad_seed_is_rejected():
    with pytest.raises(ValueError, match="16 bytes"):
        AesCtrStream(b"short")


def test_no_other_generator_protects_secrets():
    """Secrets come only from the AES-CTR CSPRNG: the MPC runtime never calls torch/numpy/random
    generators. Training, data, search and the simulator (plaintext work) are exempt."""
    root = Path(__file__).resolve().parents[1] / "ringlet"
    exempt = {"train", "data", "search", "models", "bench", "cli", "plots"}
    pattern = re.compile(r"torch\.(rand|randn|randint|randperm|Generator|manual_seed|bernoulli)\s*\(|"
                         r"np\.random\.|numpy\.random\.|^\s*import random|from random import")
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0] in exempt:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and "# not secret:" not in line:
                offenders.append(f"{rel}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
