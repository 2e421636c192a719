"""The CSPRNG: AES-128 in counter mode, keyed by 128-bit seeds.

Every random value that protects a secret (shares, masks, dealer material) comes from a
:class:`AesCtrStream`. Seeds come from the operating system's entropy source (``os.urandom``), or
are derived from a master seed for reproducible tests (:func:`derive_seed`, also AES). Nothing here
uses torch.Generator, ``random`` or numpy's generators.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 16
_CHUNK = 1 << 24  # bytes of keystream produced per AES call


def new_seed() -> bytes:
    """A fresh 128-bit seed from the OS entropy source."""
    return os.urandom(SEED_BYTES)


def _check_seed(seed: bytes) -> bytes:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
        raise ValueError(f"a seed is {SEED_BYTES} bytes, got {type(seed).__name__} of "
                         f"length {len(seed) if hasattr(seed, '__len__') else '?'}")
    return bytes(seed)


def derive_seed(master: bytes, label: str) -> bytes:
    """A 128-bit seed derived from ``master`` and a label (AES of the label's hash under master)."""
    import hashlib
    block = hashlib.sha256(label.encode()).digest()[:16]
    enc = Cipher(algorithms.AES(_check_seed(master)), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


class AesCtrStream:
    """A keystream of AES-128-CTR under ``seed``: an endless sequence of uniform bytes.

    Two streams with the same seed produce the same values in the same order, which is how parties
    that share a seed (pairwise, or with the dealer) draw correlated randomness without talking.
    """

    def __init__(self, seed: bytes, nonce: int = 0) -> None:
        key = _check_seed(seed)
        self._enc = Cipher(algorithms.AES(key), modes.CTR(nonce.to_bytes(16, "little"))).encryptor()
        self._zeros = bytes(min(_CHUNK, 1 << 20))
        self.bytes_drawn = 0

    def _draw(self, nbytes: int) -> np.ndarray:
        """``nbytes`` of keystream as a uint8 array (AES-CTR of zeros, written in place)."""
        # update_into needs 15 spare bytes after the output; a CTR update writes exactly len(input)
        buf = np.empty(nbytes + 15, dtype=np.uint8)
        out = buf.data  # the array's own memoryview (numpy's stubs give ndarray __buffer__ only on 3.12+)
        pos = 0
        while pos < nbytes:
            step = min(_CHUNK, nbytes - pos)
            if len(self._zeros) < step:
                self._zeros = bytes(step)
            self._enc.update_into(memoryview(self._zeros)[:step], out[pos:pos + step + 15])
            pos += step
        self.bytes_drawn += nbytes
        return buf[:nbytes]

    def random_bytes(self, n: int) -> bytes:
        return self._draw(n).tobytes()

    def int64(self, shape: int | Iterable[int]) -> torch.Tensor:
        """Uniform elements of Z_2^64 as an int64 tensor of ``shape``."""
        shape = tuple(shape) if not isinstance(shape, int) else (shape,)
        n = int(np.prod(shape)) if shape else 1
        return torch.from_numpy(self._draw(8 * n).view(np.int64)).reshape(shape)

    def words(self, shape: int | Iterable[int]) -> torch.Tensor:
        """Uniform 64-bit words (bit planes) — same as :meth:`int64`, named for readability."""
        return self.int64(shape)

    def bits(self, shape: int | Iterable[int]) -> torch.Tensor:
        """Uniform bits {0, 1} as int64 of ``shape`` (one byte of keystream per bit)."""
        shape = tuple(shape) if not isinstance(shape, int) else (shape,)
        n = int(np.prod(shape)) if shape else 1
        return torch.from_numpy((self._draw(n) & 1).astype(np.int64)).reshape(shape)

    def below(self, shape: int | Iterable[int], bits: int) -> torch.Tensor:
        """Uniform integers in [0, 2^bits) (0 ≤ bits ≤ 64), as int64."""
        x = self.int64(shape)
        if bits >= 64:
            return x
        return x & ((1 << bits) - 1) if bits > 0 else torch.zeros_like(x)


def csprng_throughput(megabytes: int = 64) -> float:
    """Measured keystream throughput in MB/s (for ``ringlet bench core``)."""
    import time
    stream = AesCtrStream(new_seed())
    stream.int64(1 << 16)  # warm up
    n = megabytes * (1 << 20) // 8
    t0 = time.perf_counter()
    stream.int64(n)
    return megabytes * (1 << 20) / 1e6 / (time.perf_counter() - t0)
