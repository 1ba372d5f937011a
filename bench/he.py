"""HE aggregation cost: the protocol's round beside raw TenSEAL calls on the same vectors.

For each preset, vector length L and client count n, runs one real ``he`` round
(:meth:`HEProtocol.aggregate`: the key holder's key generation and signed opening, every
client's encryption and receipt, the server's checks, the key holder's verification of each
forwarded update against its receipt, its own homomorphic sum and the decryption) and the same
work done with plain TenSEAL calls under one key pair (native constructors, ``serialize``,
load, ``add_``, ``decrypt``). Reports the phases the protocol adds: key rotation (a fresh
key pair and signature per round, and its public context sent to every client) and
verification (receipts, digests and the key holder's second parse of each ciphertext).

    python bench/he.py                                   # the table of bench/README.md
    python bench/he.py --presets bfv-4096 --lengths 1e4 --clients 10
    python bench/he.py --precision                       # CKKS error and BFV noise budget
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import statistics
import time
import warnings

import numpy as np
import tenseal as ts
from tqdm.auto import tqdm

from protocols.he import HEProtocol, parse_options
from protocols.he.codec import encode_fixed_point, native_vector_type
from protocols.he.crypto import KeystreamUniform, rounding_key
from protocols.he.keys import PublicContext, _new_context, decode_opening
from protocols.he.params import CKKS, PRESETS


def _raw_round(params, codec, xs: list[np.ndarray]) -> dict:
    """Encrypt, add and decrypt with plain TenSEAL under one key pair: the floor."""
    native = native_vector_type(params)
    ctx = _new_context(params)
    lengths = params.chunk_lengths(xs[0].shape[0])
    t0 = time.perf_counter()
    messages = []
    for i, x in enumerate(xs):
        values = x if codec is None else encode_fixed_point(
            codec, x, KeystreamUniform(rounding_key(bytes(32), i)))
        start, out = 0, []
        for size in lengths:
            out.append(native(ctx.data, values[start:start + size].tolist()).serialize())
            start += size
        messages.append(out)
    t1 = time.perf_counter()
    acc = None
    for out in messages:
        vecs = [native(ctx.data, c) for c in out]
        if acc is None:
            acc = vecs
        else:
            for a, v in zip(acc, vecs, strict=True):
                a.add_(v)
    t2 = time.perf_counter()
    for v in acc:
        v.decrypt()
    t3 = time.perf_counter()
    return {"raw_encrypt_s": (t1 - t0) / len(xs), "raw_aggregate_s": t2 - t1,
            "raw_decrypt_s": t3 - t2, "raw_round_s": t3 - t0,
            "raw_bytes_per_param": sum(map(len, messages[0])) / xs[0].shape[0]}


def bench_one(preset: str, length: int, n: int, repeats: int = 1, seed: int = 0) -> dict:
    """One table row: the median of ``repeats`` protocol rounds and raw rounds."""
    params = PRESETS[preset]
    options = {"preset": preset, "clip": 1.0}
    if params.scheme == CKKS:
        options["ckks_key_risk_accepted"] = True
    proto = HEProtocol(parse_options(options))
    codec = proto.codec(n)
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-1, 1, size=length) for _ in range(n)]
    ups = dict(enumerate(xs))
    oracle = np.sum(xs, axis=0)
    rows = []
    for rep in range(repeats):
        secrets = {c: hashlib.sha256(f"{rep}/{c}".encode()).digest() for c in ups}
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            res = proto.aggregate(rep, ups, secrets=secrets)
        wall = time.perf_counter() - start
        bound = params.error_bound(n) if codec is None else codec.error_bound(n)
        err = float(np.abs(res.total - oracle).max())
        if err > bound:
            raise AssertionError(f"protocol sum off by {err:.3g} (bound {bound:.3g})")
        t = res.timings
        row = {"round_s": wall, "open_s": t["key_holder_open"],
               "encrypt_s": t["client_encrypt"] / n, "check_s": t["server_check"],
               "verify_s": t["key_holder_verify"], "decrypt_s": t["key_holder_decrypt"],
               "bytes_up": res.bytes_up, "bytes_down": res.bytes_down,
               "round_keys_bytes": res.round_keys_bytes}
        row.update(_raw_round(params, codec, xs))
        rows.append(row)
    opening = decode_opening(params, proto.key_holder.open_round(length, room=n, clip=1.0),
                             client_id=None, stage="bench")
    loads = []
    for _ in range(3):  # what each client pays per round to load the rotated public key
        start = time.perf_counter()
        PublicContext(opening.public, params)
        loads.append(time.perf_counter() - start)
    out = {"preset": preset, "L": length, "n": n, "repeats": repeats,
           "context_load_s": min(loads)}
    for key in rows[0]:
        out[key] = statistics.median(r[key] for r in rows)
    out["bytes_per_param"] = (out["bytes_up"] / n) / length
    out["ratio"] = out["round_s"] / out["raw_round_s"]
    return out


def precision(trials: int) -> None:
    """CKKS: largest error of fresh encryptions and of sums; BFV: SEAL's noise budget."""
    import tenseal.sealapi as seal

    print("| preset | fresh max error | documented per-encryption bound | sum of 10 | "
          "sum of 100 | bound(100) |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for p in (p for p in PRESETS.values() if p.scheme == CKKS):
        ctx = _new_context(p)
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
    parser.add_argument("--presets", nargs="+", default=["bfv-4096", "ckks-4096", "ckks-8192"],
                        choices=sorted(PRESETS))
    parser.add_argument("--lengths", nargs="+", type=float, default=[1e4, 1e5])
    parser.add_argument("--clients", nargs="+", type=int, default=[10])
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds per row (protocol and raw); the median is reported")
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
        row = bench_one(preset, int(length), n, args.repeats)
        row["load"] = (before, os.getloadavg()[0])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| preset | L | n | bytes/param up | round keys KB/client | key rotation s | "
          "key load s/client | encrypt s/client (raw) | server check s | key holder verify+sum s (raw sum) | "
          "decrypt s (raw) | round s (raw) | overhead | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['L']:.0e} | {r['n']} | {r['bytes_per_param']:.1f} | "
              f"{r['round_keys_bytes'] / 1e3:.0f} | {r['open_s']:.3f} | "
              f"{r['context_load_s']:.3f} | "
              f"{r['encrypt_s']:.3f} ({r['raw_encrypt_s']:.3f}) | {r['check_s']:.3f} | "
              f"{r['verify_s']:.3f} ({r['raw_aggregate_s']:.3f}) | "
              f"{r['decrypt_s']:.3f} ({r['raw_decrypt_s']:.3f}) | "
              f"{r['round_s']:.2f} ({r['raw_round_s']:.2f}) | {r['ratio']:.2f} | "
              f"{r['load'][0]:.1f}-{r['load'][1]:.1f} |")


if __name__ == "__main__":
    main()
