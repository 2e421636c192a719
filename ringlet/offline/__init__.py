"""The dealer (trusted third party) and its seed-compressed correlated randomness.

Every server shares a seed with the dealer. For each piece of material, every *holder* draws its
share from that seeded stream; the dealer draws the same values (it knows every seed), computes the
correlation, and sends what the material's :class:`Kind` says each holder receives: for most kinds
only the *correction* — the last holder's share of the correlated part — to the last holder; for a
function-secret-sharing key the correction words to both holders
(:mod:`ringlet.protocols.fss.keys`). Offline bytes are therefore one tensor per correlation,
e.g. ℓ bits per element of a Beaver product (arithmetic corrections travel in the ring's ℓ-bit
wire format, bit planes as words), all counted under the ``offline`` tag and never as online traffic.

Modules: :mod:`~ringlet.offline.request` (a request and its errors), :mod:`~ringlet.offline.kind`
(what a kind of material is, and the table of kinds a deployment knows), :mod:`~ringlet.offline.core`
(the kinds below), :mod:`~ringlet.offline.dealer` (the dealer) and :mod:`~ringlet.offline.link` (a
server's link to it). Protocol families bring kinds of their own (FSS keys); the table every party
uses is :func:`ringlet.protocols.catalog.material_kinds`.

Requests: server 0 sends each request (a small descriptor) to the dealer; the dealer answers the
last holder. With a *plan* (the list of every request of a computation, recorded on an earlier run of
the same shapes), all material can be produced before the online phase starts (:meth:`pregenerate`).

Kinds (holders h_0 … h_{q−1}; "c" marks the corrected tensor):
  beaver   a, b, c = op(a, b) with op ∈ {mul, matmul, conv2d}                (arithmetic)
  and      a, b, c = a ∧ b on bit planes                                          (binary)
  and2     a, b1, b2, c1 = a ∧ b1, c2 = a ∧ b2 (two ANDs sharing operand a)       (binary)
  pand     2-party AND of private inputs: h_0 gets u, z0; h_1 gets v, z1 with z0 ⊕ z1 = u ∧ v
  inject   r ∈ {0,1} XOR-shared (1 plane) and arithmetic-shared, s, and r·s (arithmetic)
  b2a      r ∈ {0,1} XOR-shared and arithmetic-shared
  trunc    r (uniform in Z_2^ℓ), msb(r) and (r mod 2^(ℓ−1)) >> f, arithmetic-shared
  pim      private-input products: holder 0 gets masks α_1…α_{d−1}, holder 1 masks β_1…β_{d−1},
           both get shares of every α_a·β_b with a + b ≤ d (ESPN's cross terms)
  powers   r uniform and r^2 … r^d (ring powers), arithmetic-shared (HoneyBadger)
  injtrunc r_b ∈ {0,1} XOR- and arithmetic-shared, r uniform, msb(r), low = (r mod 2^(ℓ−1)) >> d,
           r_b·low and r_b·msb(r) (the select that also truncates by d bits)
"""
