"""HE parameter presets and the validation of ``protocol.options`` for ``he``.

No TenSEAL here: options are checked (and errors reported) without loading the library.

Every preset keeps SEAL's 128-bit security bound on the total coefficient modulus for its
ring degree (109 bits at N=4096, 218 at 8192, 438 at 16384). Ciphertexts live at the top data
level, the coefficient modulus without its last ("special") prime; only additions are done,
so the aggregation-only presets use a single 60-bit data prime, which halves the ciphertext
(see docs/he.md for the bytes and the measured precision of each).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CKKS = "ckks"
BFV = "bfv"
SCHEMES = (CKKS, BFV)


@dataclass(frozen=True)
class HEParams:
    """One set of encryption parameters and what it guarantees.

    Attributes:
        name: preset name used in configs.
        scheme: ``"ckks"`` (approximate float sums) or ``"bfv"`` (exact sums modulo
            ``plain_modulus`` of fixed-point integers).
        poly_modulus_degree: ring degree N.
        coeff_mod_bit_sizes: bit sizes of the coefficient-modulus primes; the last is the
            special prime, not part of a ciphertext.
        scale_bits: CKKS only: the encoding scale is ``2**scale_bits``.
        plain_modulus: BFV only: the prime plaintext modulus t (t = 1 mod 2N, for batching).
        max_summands: most ciphertexts one aggregate may add. BFV: keeps the noise budget
            positive even if the noise of every summand adds up in the worst case; CKKS:
            the range the error bound was calibrated for.
        fresh_error: CKKS only: bound on the per-coordinate error of one fresh encryption
            (about three times the largest error measured over 400 encryptions, 0.8 to 3.3
            million coordinates; ``python bench/he.py --precision``, docs/he.md).
        max_abs_sum: CKKS only: largest magnitude of any coordinate of the sum for which
            ``fresh_error`` holds: the sum times the scale must stay below half the data
            modulus (ckks-4096), and within float64's 53 bits of the scaled value (beyond about
            2^25 the encoding's rounding exceeds the bound).
        noise_budget_bits: BFV only: invariant noise budget of a fresh ciphertext (measured
            with SEAL, documentation only).
    """

    name: str
    scheme: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int = 0
    plain_modulus: int = 0
    max_summands: int = 10_000
    fresh_error: float = 0.0
    max_abs_sum: float = 0.0
    noise_budget_bits: int = 0
    description: str = field(default="", compare=False)

    @property
    def slots(self) -> int:
        """Values per ciphertext: N/2 complex slots used as reals (CKKS), N (BFV batching)."""
        return self.poly_modulus_degree // 2 if self.scheme == CKKS else self.poly_modulus_degree

    @property
    def data_primes(self) -> int:
        """Primes in a fresh ciphertext's modulus (all but the special prime)."""
        return max(1, len(self.coeff_mod_bit_sizes) - 1)

    @property
    def scale(self) -> float:
        """CKKS encoding scale (0 for BFV, whose scale is the fixed-point codec's)."""
        return float(2**self.scale_bits) if self.scheme == CKKS else 0.0

    def n_chunks(self, length: int) -> int:
        """Ciphertexts needed for a vector of ``length`` values."""
        return math.ceil(length / self.slots)

    def chunk_lengths(self, length: int) -> list[int]:
        """Values in each ciphertext: full chunks, then the remainder."""
        full, rest = divmod(length, self.slots)
        return [self.slots] * full + ([rest] if rest else [])

    def error_bound(self, n_summands: int) -> float:
        """CKKS: largest per-coordinate error of a decrypted sum of ``n_summands`` encryptions.

        Errors of independent encryptions add; the worst case is linear in the count (the
        measured growth is close to its square root). BFV sums are exact (0.0 here; the
        fixed-point rounding is the codec's, see :class:`protocols.quantize.FixedPointCodec`).
        """
        return n_summands * self.fresh_error if self.scheme == CKKS else 0.0


PRESETS: dict[str, HEParams] = {
    p.name: p
    for p in (
        HEParams("ckks-4096", CKKS, 4096, (60, 49), scale_bits=40, max_summands=100_000,
                 fresh_error=2e-8, max_abs_sum=2.0**17,
                 description="aggregation only: one 60-bit data prime; the smallest CKKS"),
        HEParams("ckks-8192", CKKS, 8192, (60, 40, 40, 60), scale_bits=40,
                 max_summands=100_000, fresh_error=5e-8, max_abs_sum=2.0**20,
                 description="TenSEAL's tutorial parameters; room for two plaintext "
                             "multiplications"),
        HEParams("ckks-16384", CKKS, 16384, (60, 40, 40, 40, 40, 60), scale_bits=40,
                 max_summands=100_000, fresh_error=1e-7, max_abs_sum=2.0**20,
                 description="larger ring: 8192 values per ciphertext, four levels"),
        HEParams("bfv-4096", BFV, 4096, (60, 49), plain_modulus=8589852673,
                 max_summands=10_000, noise_budget_bits=20,
                 description="33-bit plain modulus: fixed point as fine as SecAgg's Z_2^32"),
        HEParams("bfv-8192", BFV, 8192, (60, 60, 60), plain_modulus=4503599627124737,
                 max_summands=1_000_000, noise_budget_bits=60,
                 description="52-bit plain modulus: ~2^19 times finer fixed point"),
    )
}

#: BFV is the default scheme: exact, smallest, and its decryption reveals nothing beyond the
#: sum; a CKKS decryption handed to the server that computed the ciphertext is exposed to
#: key recovery (Li and Micciancio, Eurocrypt 2021; see docs/he.md).
DEFAULT_PRESET = {CKKS: "ckks-8192", BFV: "bfv-4096"}

#: Default per-coordinate clipping bound (both schemes).
DEFAULT_CLIP = 1.0


@dataclass(frozen=True)
class HEOptions:
    """Validated ``protocol.options`` of the ``he`` protocol.

    Attributes:
        params: the encryption preset.
        min_clients: fewest valid contributions for a round to complete (and the fewest the
            key holder agrees to decrypt; clients refuse a round opened for fewer).
        clip: every coordinate is clipped to ``[-clip, clip]`` before encryption (BFV: before
            fixed-point encoding) and the clipped coordinates are counted. With user-level DP,
            at least the clipping norm plus the noise range.
        max_clients: summands the encoding leaves room for (BFV: the fixed-point range; CKKS:
            ``max_clients * clip`` must stay in the preset's exact range); ``None`` means the
            number of clients sampled in the round.
        ckks_key_risk_accepted: CKKS only, required: the run accepts that the server, which
            sees each round's decrypted CKKS sum, can recover that round's secret key
            passively (Li and Micciancio, Eurocrypt 2021) and decrypt that round's updates.
        report_clipped: each client puts its count of clipped coordinates in its receipt,
            and the key holder hands the server the round's total. ``False`` (set by the
            privacy layer under distributed DP, where the server is untrusted): every client
            reports 0, so neither the key holder nor the server learns this un-noised
            statistic, and the round's ``clipped`` is ``None``.
    """

    params: HEParams
    min_clients: int = 1
    clip: float = DEFAULT_CLIP
    max_clients: int | None = None
    ckks_key_risk_accepted: bool = False
    report_clipped: bool = True


_KEYS = ("scheme", "preset", "min_clients", "clip", "max_clients", "ckks_key_risk_accepted",
         "report_clipped")
_PREFIX = "protocol.options."

#: The option a CKKS run must set to ``true``.
CKKS_OPT_IN = "ckks_key_risk_accepted"


def _error(key: str, problem: str) -> ValueError:
    return ValueError(f"{_PREFIX}{key} {problem}")


def _str(key: str, value: Any, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _error(key, f"must be one of {sorted(choices)}, got {value!r}")
    return value


def parse_options(options: Mapping[str, Any]) -> HEOptions:
    """Check ``protocol.options`` for ``he``; every error names the option and the fix."""
    options = dict(options)
    unknown = sorted(set(options) - set(_KEYS))
    if unknown:
        raise ValueError(f"protocol 'he' takes no option {unknown[0]!r}; options: {list(_KEYS)}")
    scheme = options.get("scheme")
    preset = options.get("preset")
    if scheme is not None:
        scheme = _str("scheme", scheme, SCHEMES)
    if preset is None:
        preset = DEFAULT_PRESET[scheme or BFV]
    preset = _str("preset", preset, PRESETS)
    params = PRESETS[preset]
    if scheme is not None and params.scheme != scheme:
        raise ValueError(f"protocol.options.preset {preset!r} is a {params.scheme} preset, "
                         f"but scheme is {scheme!r}")
    min_clients = _int("min_clients", options.get("min_clients", 1), low=1)
    if min_clients > params.max_summands:
        raise ValueError(f"protocol.options.min_clients = {min_clients} exceeds the "
                         f"{params.max_summands} summands preset {preset!r} supports")
    accepted = options.get(CKKS_OPT_IN, False)
    if not isinstance(accepted, bool):
        raise _error(CKKS_OPT_IN, f"must be true or false, got {accepted!r}")
    if params.scheme == CKKS and not accepted:
        raise ValueError(f"protocol.options.{CKKS_OPT_IN} = true is required for CKKS: the "
                         "server sees each round's decrypted CKKS sum and can recover that "
                         "round's secret key from it (Li and Micciancio, Eurocrypt 2021), then "
                         "decrypt that round's individual updates; use scheme = 'bfv' unless "
                         "this risk is accepted")
    if params.scheme != CKKS and accepted:
        raise _error(CKKS_OPT_IN, "applies to CKKS only; remove it for BFV")
    clip = options.get("clip", DEFAULT_CLIP)
    if isinstance(clip, bool) or not isinstance(clip, int | float) or not (
            math.isfinite(clip) and clip > 0):
        raise ValueError(f"protocol.options.clip must be a positive finite number, got {clip!r}")
    clip = float(clip)
    max_clients = options.get("max_clients")
    if max_clients is not None:
        max_clients = _int("max_clients", max_clients, low=min_clients)
        if max_clients > params.max_summands:
            raise ValueError(f"protocol.options.max_clients = {max_clients} exceeds the "
                             f"{params.max_summands} summands preset {preset!r} supports")
        check_precision(params, clip, max_clients)
    report = options.get("report_clipped", True)
    if not isinstance(report, bool):
        raise _error("report_clipped", f"must be true or false, got {report!r}")
    return HEOptions(params, min_clients, clip, max_clients, accepted, report)


def check_precision(params: HEParams, clip: float, max_clients: int) -> None:
    """Refuse a BFV codec with less than one fixed-point step per unit, and a CKKS range
    (``max_clients * clip``) beyond what the preset decrypts within its error bound."""
    if params.scheme == CKKS:
        if max_clients * clip > params.max_abs_sum:
            raise ValueError(f"protocol.options.clip = {clip} with {max_clients} clients can "
                             f"reach {max_clients * clip:.3g}, beyond the "
                             f"{params.max_abs_sum:.3g} preset {params.name!r} decrypts "
                             "correctly: lower clip or choose another preset")
        return
    half = params.plain_modulus // 2 - 1 - max_clients
    if half < max_clients * clip:
        raise ValueError(f"preset {params.name!r} (plain modulus {params.plain_modulus}) leaves "
                         f"no precision for {max_clients} clients with clip {clip}: choose "
                         "bfv-8192, a smaller clip or fewer clients")


def _int(key: str, value: Any, *, low: int) -> int:
    """An integer option: bools, floats (even 2.0), strings, lists are refused."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"protocol.options.{key} must be an integer >= {low}, got {value!r}")
    return value
