"""HE aggregation cost: the protocol beside raw TenSEAL calls on the same vectors.

For each preset, vector length L and client count n, times the three phases of a round,
encrypt (per client), aggregate (the server's parse, checks and additions over n clients) and
decrypt (the key holder's, once; per-client phases use the median client, times n), for the protocol's parties and for the same work done with
plain TenSEAL calls (``ts.ckks_vector``/``ts.bfv_vector``, ``serialize``, ``*_vector_from``,
``+=``, ``decrypt``), and reports bytes per parameter and the overhead ratio.

With n > --distinct (default 10), only --distinct clients encrypt (timed; the round estimate
uses their mean); the other clients' ciphertexts are homomorphic sums of two or three of those
(distinct ciphertexts, built untimed), so the aggregation really adds n different
ciphertexts. Protocol and raw work alternate per client, in rotating order, so load changes
and cache effects hit both alike.

    python bench/he.py                                   # the table of bench/README.md
    python bench/he.py --presets ckks-4096 --lengths 1e4 --clients 10
    python bench/he.py --precision                       # CKKS error and BFV noise budget
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import time

import numpy as np
import tenseal as ts
from tqdm.auto import tqdm

from protocols.he import HEProtocol, parse_options, wire
from protocols.he.codec import encode_fixed_point, native_vector_type
from protocols.he.params import CKKS, PRESETS


def _split(values: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    return np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) > 1 else [values]


class _Clock:
    """Collects one duration per use; the median resists load spikes on a shared machine."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __enter__(self):
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.times.append(time.perf_counter() - self._t)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def bench_one(preset: str, length: int, n: int, distinct: int, repeats: int = 1,
              seed: int = 0) -> dict:
    """One table row: protocol and raw TenSEAL phases on the same vectors and keys."""
    params = PRESETS[preset]
    k = min(n, distinct)
    combos = list(itertools.islice(itertools.chain(
        itertools.combinations(range(k), 2), itertools.combinations(range(k), 3)), n - k))
    if n - k > len(combos):
        raise ValueError(f"n = {n} needs more than {k} distinct encryptions")
    n_summands = k + sum(map(len, combos))
    options = {"preset": preset}
    if params.scheme != CKKS:  # room for every encrypted vector inside the sums
        options.update(clip=1.0, max_clients=n_summands)
    proto = HEProtocol(parse_options(options))
    codec = proto.codec(n_summands)
    scale = codec.scale if codec is not None else params.scale
    rnd = 1
    client, holder = proto.client, proto.key_holder
    pub = ts.context_from(holder.public_context_bytes(), n_threads=1)
    sec = ts.context_from(holder.secret_context_bytes(), n_threads=1)
    if params.scheme == CKKS:
        pub.global_scale = sec.global_scale = params.scale
    public_vec = ts.ckks_vector if params.scheme == CKKS else ts.bfv_vector
    public_load = ts.ckks_vector_from if params.scheme == CKKS else ts.bfv_vector_from
    native = native_vector_type(params)
    lengths = params.chunk_lengths(length)
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-1, 1, size=length) for _ in range(k)]

    enc_p, enc_r, enc_n = _Clock(), _Clock(), _Clock()
    fresh_msgs, fresh_raw, raw_values = [], [], []
    for i in range(k):
        seq = np.random.SeedSequence([seed, rnd, i])
        values = xs[i] if codec is None else encode_fixed_point(codec, xs[i],
                                                                np.random.default_rng(seq))
        raw_values.append(values)
        parts = _split(values, lengths)
        out: dict[str, object] = {}

        def protocol(i=i, seq=seq, out=out):
            out["p"] = client.encrypt_update(rnd, i, xs[i], codec=codec,
                                             rng=np.random.default_rng(seq))

        def raw(parts=parts, out=out):
            out["r"] = [public_vec(pub, part).serialize() for part in parts]

        def raw_native(parts=parts):
            for part in parts:
                native(pub.data, part.tolist()).serialize()

        jobs = [(enc_p, protocol), (enc_r, raw), (enc_n, raw_native)]
        for clock, job in jobs[i % 3:] + jobs[:i % 3]:  # rotate: no path always goes first
            best = _Clock()
            for _ in range(repeats):  # the fastest of a few tries: load spikes only add time
                with best:
                    job()
            clock.times.append(min(best.times))
        fresh_msgs.append(out["p"])
        fresh_raw.append(out["r"])

    expect = wire.Expect(wire.UPDATE, params.scheme, rnd, length, len(lengths), scale,
                         client.public.fingerprint)
    fresh_chunks = [wire.decode(m, dataclasses.replace(expect, party=i),
                                client_id=i, stage="bench").chunks
                    for i, m in enumerate(fresh_msgs)]

    def combo_sum(combo: tuple[int, ...]) -> list[bytes]:
        out = []
        for i in range(len(lengths)):
            acc = native(pub.data, fresh_chunks[combo[0]][i])
            for j in combo[1:]:
                acc.add_(native(pub.data, fresh_chunks[j][i]))
            out.append(acc.serialize())
        return out

    agg_p, agg_r = _Clock(), _Clock()
    round_sum = proto.server.open_round(rnd, length, scale)
    acc = None
    oracle = np.zeros(length)
    bytes_p = bytes_r = 0
    for i in tqdm(range(n), desc=f"{preset} L={length} n={n}", leave=False):
        if i < k:
            msg, raw_chunks = fresh_msgs[i], fresh_raw[i]
            oracle += xs[i] if codec is None else codec.decode_sum(np.mod(raw_values[i], codec.modulus))
        else:
            combo = combos[i - k]
            raw_chunks = combo_sum(combo)
            msg = wire.encode(wire.UPDATE, scheme=params.scheme, round_id=rnd, party=i,
                              length=length, scale=scale, fingerprint=client.public.fingerprint,
                              chunks=raw_chunks)
            for j in combo:
                oracle += xs[j] if codec is None else codec.decode_sum(
                    np.mod(raw_values[j], codec.modulus))
        bytes_p, bytes_r = max(bytes_p, len(msg)), max(bytes_r, sum(map(len, raw_chunks)))

        def protocol(i=i, msg=msg):
            round_sum.add(i, msg)

        def raw(raw_chunks=raw_chunks):
            nonlocal acc
            vecs = [public_load(pub, c) for c in raw_chunks]
            if acc is None:
                acc = vecs
            else:
                for x, y in zip(acc, vecs, strict=True):
                    x += y

        jobs = [(agg_p, protocol), (agg_r, raw)]
        for clock, job in (jobs if i % 2 else jobs[::-1]):
            with clock:
                job()
    dec_p, dec_r = _Clock(), _Clock()
    with dec_p:
        answer = holder.decrypt_aggregate(round_sum.aggregate_message(), round_id=rnd)
        total_p = round_sum.read_sum(answer, stage="bench")
        if codec is not None:
            total_p = codec.decode_sum(total_p)
    with dec_r:
        sums = [v.serialize() for v in acc]
        total_r = np.concatenate([np.asarray(public_load(sec, s).decrypt()) for s in sums])
    if codec is not None:  # raw BFV stops at the integers; the protocol also decodes them
        total_r = codec.decode_sum(np.mod(total_r, codec.modulus))
    bound = params.error_bound(n_summands) if codec is None else 1e-12 * n_summands
    for name, total in (("protocol", total_p), ("raw", total_r)):
        err = float(np.abs(total - oracle).max())
        if err > bound:
            raise AssertionError(f"{name} sum off by {err:.3g} (bound {bound:.3g})")
    row = {"preset": preset, "L": length, "n": n, "distinct": k,
           "bytes_per_param": bytes_p / length, "raw_bytes_per_param": bytes_r / length,
           "encrypt_s": enc_p.median, "raw_encrypt_s": enc_r.median,
           "native_encrypt_s": enc_n.median,
           "aggregate_s": n * agg_p.median, "raw_aggregate_s": n * agg_r.median,
           "decrypt_s": dec_p.median, "raw_decrypt_s": dec_r.median}
    agg, raw_agg = row["aggregate_s"], row["raw_aggregate_s"]
    row["round_s"] = n * row["encrypt_s"] + agg + row["decrypt_s"]
    row["raw_round_s"] = n * row["raw_encrypt_s"] + raw_agg + row["raw_decrypt_s"]
    row["native_round_s"] = n * row["native_encrypt_s"] + raw_agg + row["raw_decrypt_s"]
    row["ratio"] = row["round_s"] / row["raw_round_s"]
    row["ratio_native"] = row["round_s"] / row["native_round_s"]
    return row


def precision(trials: int) -> None:
    """CKKS: largest error of fresh encryptions and of sums; BFV: SEAL's noise budget."""
    import tenseal.sealapi as seal

    print("| preset | fresh max error | documented per-encryption bound | sum of 10 | "
          "sum of 100 | bound(100) |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for p in (p for p in PRESETS.values() if p.scheme == CKKS):
        proto = HEProtocol(parse_options({"preset": p.name}))
        ctx = proto.key_holder._context
        native = native_vector_type(p)
        fresh, vecs, xs = 0.0, [], []
        for _ in tqdm(range(trials), desc=p.name, leave=False):
            x = rng.uniform(-1, 1, size=p.slots)
            v = native(ctx.data, x.tolist())
            fresh = max(fresh, float(np.abs(np.asarray(v.decrypt()) - x).max()))
            if len(vecs) < 100:
                vecs.append(v)
                xs.append(x)
        sums = {}
        for m in (10, 100):
            acc = native(ctx.data, vecs[0].serialize())
            for v in vecs[1:m]:
                acc.add_(v)
            sums[m] = float(np.abs(np.asarray(acc.decrypt()) - np.sum(xs[:m], axis=0)).max())
        print(f"| {p.name} | {fresh:.2e} | {p.fresh_error:.0e} | {sums[10]:.2e} | "
              f"{sums[100]:.2e} | {p.error_bound(100):.0e} |")
    print()
    print("| preset | plain modulus bits | noise budget: fresh | after 10 | after 100 | "
          "after 1000 |")
    print("|---|---|---|---|---|---|")
    for p in (p for p in PRESETS.values() if p.scheme != CKKS):
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.BFV)
        parms.set_poly_modulus_degree(p.poly_modulus_degree)
        parms.set_coeff_modulus(seal.CoeffModulus.Create(p.poly_modulus_degree,
                                                          list(p.coeff_mod_bit_sizes)))
        parms.set_plain_modulus(p.plain_modulus)
        ctx = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
        keygen = seal.KeyGenerator(ctx)
        pk = seal.PublicKey()
        keygen.create_public_key(pk)
        enc, dec = seal.Encryptor(ctx, pk), seal.Decryptor(ctx, keygen.secret_key())
        ev, encoder = seal.Evaluator(ctx), seal.BatchEncoder(ctx)
        plain = seal.Plaintext()
        encoder.encode([p.plain_modulus // 2 - 1] * p.poly_modulus_degree, plain)
        acc = seal.Ciphertext()
        enc.encrypt(plain, acc)
        budgets = [dec.invariant_noise_budget(acc)]
        for count in range(2, 1001):
            ct = seal.Ciphertext()
            enc.encrypt(plain, ct)
            ev.add_inplace(acc, ct)
            if count in (10, 100, 1000):
                budgets.append(dec.invariant_noise_budget(acc))
        print(f"| {p.name} | {p.plain_modulus.bit_length()} | " +
              " | ".join(str(b) for b in budgets) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["ckks-8192", "ckks-4096", "bfv-4096"],
                        choices=sorted(PRESETS))
    parser.add_argument("--lengths", nargs="+", type=float, default=[1e4, 1e5, 1e6])
    parser.add_argument("--clients", nargs="+", type=int, default=[10, 100])
    parser.add_argument("--distinct", type=int, default=10,
                        help="clients that really encrypt; the others send pair sums")
    parser.add_argument("--repeats", type=int, default=1,
                        help="encryptions per client and path, keeping the fastest (use 3 on a "
                             "busy machine)")
    parser.add_argument("--precision", action="store_true",
                        help="measure CKKS error and BFV noise budget instead")
    parser.add_argument("--trials", type=int, default=200, help="fresh encryptions (--precision)")
    args = parser.parse_args()
    print(f"tenseal {ts.__version__}, load average before: {os.getloadavg()}")
    if args.precision:
        precision(args.trials)
        return
    rows = []
    for preset, length, n in itertools.product(args.presets, args.lengths, args.clients):
        before = os.getloadavg()[0]
        row = bench_one(preset, int(length), n, args.distinct, args.repeats)
        row["load"] = (before, os.getloadavg()[0])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| preset | L | n | bytes/param | raw bytes/param | encrypt s/client (raw) | "
          "aggregate s (raw) | decrypt s (raw) | round s (raw) | overhead | vs native raw | "
          "load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['L']:.0e} | {r['n']} | {r['bytes_per_param']:.1f} | "
              f"{r['raw_bytes_per_param']:.1f} | {r['encrypt_s']:.3f} ({r['raw_encrypt_s']:.3f}) | "
              f"{r['aggregate_s']:.2f} ({r['raw_aggregate_s']:.2f}) | "
              f"{r['decrypt_s']:.3f} ({r['raw_decrypt_s']:.3f}) | "
              f"{r['round_s']:.2f} ({r['raw_round_s']:.2f}) | {r['ratio']:.3f} | "
              f"{r['ratio_native']:.3f} | {r['load'][0]:.1f}-{r['load'][1]:.1f} |")


if __name__ == "__main__":
    main()
