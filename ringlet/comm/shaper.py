"""Link profiles and a transport-level link shaper (bandwidth + latency per message).

``tc netem`` does not work on these machines, so the default way to emulate a network is in the
transport: every message first occupies the sender's link for bytes·8/bandwidth seconds (the sender
waits, so a busy link delays later messages), and the receiver sees it one one-way latency (RTT/2)
later. Both ends of a symmetric round pay serialisation + RTT/2, as on a full-duplex link. Clocks are
this machine's own, so the shaper is for parties on one host (threads or local processes).
The dealer's material (step ``offline``: requests and the material itself, the offline phase) is not
shaped: the profile models the online link between the parties, and the offline bytes are reported
apart (a 64-image exact FSS run receives 24 GB of keys, 9 minutes at 352 Mbit/s).

Profiles (the HummingBird paper's set-ups): ``lan`` 10 Gbps, ``highbw`` 3 Gbps, ``wan`` 352 Mbps (the
paper's WAN: bandwidth only), ``wan-rtt`` 352 Mbps with a round-trip time (default 50 ms).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LinkProfile:
    name: str
    bandwidth_bps: float          # bits per second, per direction
    rtt_s: float = 0.0            # round-trip time in seconds

    def transfer_seconds(self, nbytes: int) -> float:
        return nbytes * 8 / self.bandwidth_bps

    def projected_seconds(self, compute_s: float, bytes_sent: int, rounds: int) -> float:
        """The paper's analytic model: compute + bytes / bandwidth + rounds × RTT."""
        return compute_s + self.transfer_seconds(bytes_sent) + rounds * self.rtt_s

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bandwidth_mbps": self.bandwidth_bps / 1e6,
                "rtt_ms": self.rtt_s * 1e3}


PROFILES = {
    "lan": LinkProfile("lan", 10e9),
    "highbw": LinkProfile("highbw", 3e9),
    "wan": LinkProfile("wan", 352e6),
    "wan-rtt": LinkProfile("wan-rtt", 352e6, 0.050),
}


def profile(name: str, rtt_ms: float | None = None) -> LinkProfile:
    """A named profile; ``rtt_ms`` overrides its round-trip time (e.g. wan-rtt with 100 ms)."""
    if name not in PROFILES:
        raise ValueError(f"unknown link profile {name!r}; known: {', '.join(PROFILES)}")
    p = PROFILES[name]
    if rtt_ms is not None:
        if rtt_ms < 0:
            raise ValueError(f"round-trip time must be >= 0 ms, got {rtt_ms}")
        p = LinkProfile(p.name if rtt_ms == p.rtt_s * 1e3 else f"{p.name}@{rtt_ms:g}ms",
                        p.bandwidth_bps, rtt_ms / 1e3)
    return p


def parse_profile(text: str) -> LinkProfile:
    """A profile from its name, or from the name a changed round-trip time gives it
    (``wan-rtt@100ms``, as :func:`profile` names it)."""
    name, _, rtt = text.partition("@")
    if rtt:
        if not rtt.endswith("ms"):
            raise ValueError(f"link {text!r}: expected NAME or NAME@<rtt>ms")
        try:
            return profile(name, float(rtt[:-2]))
        except ValueError as exc:
            raise ValueError(f"link {text!r}: {exc}") from None
    return profile(name)


class LinkShaper:
    """Applies a :class:`LinkProfile` to one party's sends and receives."""

    def __init__(self, link: LinkProfile) -> None:
        self.link = link
        self._free_at = 0.0  # when this party's outgoing link is idle again
        self._lock = threading.Lock()
        self.seconds_waited = 0.0

    def _sleep_until(self, t: float) -> None:
        delay = t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
            self.seconds_waited += delay

    def before_send(self, dst: int, nbytes: int) -> None:
        with self._lock:
            start = max(time.perf_counter(), self._free_at)
            self._free_at = start + self.link.transfer_seconds(nbytes)
            done = self._free_at
        self._sleep_until(done)

    def after_recv(self, src: int, nbytes: int) -> None:
        if self.link.rtt_s:
            self._sleep_until(time.perf_counter() + self.link.rtt_s / 2)
