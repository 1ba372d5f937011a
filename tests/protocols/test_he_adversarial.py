"""A server that deviates from the HE protocol, against the production key holder.

The server holds what it holds in a deployment: the public context, every message that reaches
it, and the key holder's network interface. Each test asserts what it recovers.
"""

import numpy as np
import tenseal as ts

from protocols import FaultyChannel, create
from protocols.he import wire
from protocols.he.codec import encrypt_chunks
from tests.protocols.he_seal import SealAttacker

STAGE = "encrypted_update"


def _attacker(proto):
    template = encrypt_chunks(proto.client.public.context, proto.params,
                              np.zeros(proto.params.slots, dtype=np.int64))[0]
    return SealAttacker(proto.params, template)


def test_key_probe_recovers_the_key_from_any_decryption():
    """Control: whoever obtains the decryption of (0, Delta) decrypts every ciphertext."""
    proto = create("he", {"scheme": "bfv"})
    attacker = _attacker(proto)
    secret = ts.context(ts.SCHEME_TYPE.BFV, proto.params.poly_modulus_degree,
                        plain_modulus=proto.params.plain_modulus,
                        coeff_mod_bit_sizes=list(proto.params.coeff_mod_bit_sizes), n_threads=1)
    probe = ts._ts_cpp.BFVVector(secret.data, attacker.key_probe())
    s = attacker.secret_from_slots(np.mod(np.asarray(probe.decrypt(), dtype=np.int64),
                                          attacker.t))
    assert set(np.unique(s)) <= {-1, 0, 1} and np.count_nonzero(s) > attacker.n // 2
    values = np.random.default_rng(0).integers(0, attacker.t, attacker.n)
    victim = ts._ts_cpp.BFVVector(secret.data, values.tolist()).serialize()
    np.testing.assert_array_equal(attacker.decrypt(victim, s), values)


def test_crafted_aggregate_yields_the_key_and_a_later_update():
    proto = create("he", {"scheme": "bfv", "min_clients": 2})
    attacker = _attacker(proto)
    holder, n = proto.key_holder, attacker.n
    probe = wire.encode(wire.AGGREGATE, scheme="bfv", round_id=3, party=2, length=n, scale=0.0,
                        fingerprint=holder.fingerprint, chunks=[attacker.key_probe()],
                        contributors=[0, 1])
    answer = holder.decrypt_aggregate(probe, round_id=3)
    frame = wire.decode(answer, wire.Expect(wire.SUM, "bfv", 3, n, 1, None, holder.fingerprint),
                        client_id=-1, stage="decrypted_sum")
    s = attacker.secret_from_slots(np.frombuffer(frame.chunk(0), dtype="<u8"))
    # a later, honest round: the server keeps client 1's upload
    ups = {c: np.random.default_rng(c).uniform(-1, 1, n) for c in range(3)}
    seen = {}

    def keep(payload):
        seen[1] = payload
        return payload

    proto.aggregate(4, ups, channel=FaultyChannel(tamper={(STAGE, 1): keep}))
    chunk = wire.decode(seen[1], wire.Expect(wire.UPDATE, "bfv", 4, n, 1, None,
                                             holder.fingerprint), client_id=1,
                        stage=STAGE).chunk(0)
    residues = attacker.decrypt(chunk, s).astype(np.int64)
    t, codec = attacker.t, proto.codec(3)
    recovered = np.where(residues > t // 2, residues - t, residues) / codec.scale
    assert np.abs(recovered - ups[1]).max() <= 1 / codec.scale
