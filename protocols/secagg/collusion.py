"""How likely colluding clients expose some honest client of a round, or of a run.

Model: a round has ``n`` clients of which ``c = round(corrupt * n)`` collude with the server.
An honest client is *exposed* when at least ``t`` of its ``k`` neighbours collude: with their
shares of its mask key and the honest survivors' shares of its self-mask seed, the server
unmasks its input. (Colluders splitting the honest survivors' graph into pieces reveal sums
of pieces, not single inputs; that is not counted here.) The circle order is a fresh random
permutation every round (the graph seed is a hash of that round's transcript), so a client's
neighbours are a uniform ``k``-subset of the other ``n - 1``, and rounds are independent.

- per client: ``P[Hypergeometric(n - 1, c, k) >= t]``, exact;
- some client of a round: at most ``(n - c)`` times that (union bound), and a Monte Carlo
  estimate over random circle orders of the real graph construction (analysis only: the
  protocol never uses this generator);
- some client of a run of ``R`` rounds: ``1 - (1 - p_round) ** R``, at most ``R`` times the
  round's union bound.

    python -m protocols.secagg.collusion --n 100 --k 20 --t 11 --corrupt 0.1 --rounds 100
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
from scipy import stats

from protocols.secagg.graph import effective_degree
from protocols.secagg.options import SecAggOptions


@dataclass(frozen=True)
class Exposure:
    """Probabilities that colluders expose an honest client (see the module docstring)."""

    n: int
    k: int
    t: int
    corrupted: int
    rounds: int
    per_client: float
    round_union: float
    run_union: float
    trials: int = 0
    round_hits: int = 0

    @property
    def round_estimate(self) -> float | None:
        """Monte Carlo estimate of P[some honest client of a round is exposed]."""
        return self.round_hits / self.trials if self.trials else None

    @property
    def round_upper(self) -> float | None:
        """One-sided 95% upper confidence bound on it (Clopper-Pearson)."""
        if not self.trials:
            return None
        if self.round_hits == self.trials:
            return 1.0
        return float(stats.beta.ppf(0.95, self.round_hits + 1, self.trials - self.round_hits))

    @property
    def run_estimate(self) -> float | None:
        p = self.round_estimate
        return None if p is None else 1.0 - (1.0 - p) ** self.rounds


def _simulate(n: int, k: int, t: int, c: int, trials: int, seed: int) -> int:
    """Rounds (of ``trials``) in which some honest client has >= t corrupt neighbours."""
    rng = np.random.default_rng(seed)
    half = k // 2
    hits = 0
    base = np.zeros(n, dtype=np.int32)
    base[:c] = 1
    for start in range(0, trials, 2048):
        batch = min(2048, trials - start)
        bad = rng.permuted(np.tile(base, (batch, 1)), axis=1)  # corrupt positions on the circle
        ext = np.concatenate([bad[:, n - half:], bad, bad[:, :half]], axis=1)
        cs = np.concatenate([np.zeros((batch, 1), np.int32), np.cumsum(ext, axis=1)], axis=1)
        window = cs[:, 2 * half + 1:2 * half + 1 + n] - cs[:, :n] - bad  # the k around each
        hits += int(np.count_nonzero(np.any((bad == 0) & (window >= t), axis=1)))
    return hits


def exposure(n: int, k: int, t: int, corrupt: float, *, rounds: int = 1, trials: int = 0,
             seed: int = 0) -> Exposure:
    """Exposure probabilities for ``n`` clients, degree ``k`` (made effective as the protocol
    does), threshold ``t`` and a colluding fraction ``corrupt``; ``trials`` Monte Carlo rounds."""
    if n < 2 or t < 1 or not 0.0 <= corrupt <= 1.0 or rounds < 1:
        raise ValueError("need n >= 2, t >= 1, 0 <= corrupt <= 1 and rounds >= 1")
    k = effective_degree(k, n)
    c = int(round(corrupt * n))
    honest = n - c
    per_client = float(stats.hypergeom.sf(t - 1, n - 1, c, k)) if honest else 0.0
    round_union = min(1.0, honest * per_client)
    run_union = min(1.0, rounds * round_union)
    hits = 0
    if trials and honest and k >= n - 1:  # complete graph: each honest client sees all c
        hits = trials if c >= t else 0
    elif trials and honest:
        hits = _simulate(n, k, t, c, trials, seed)
    return Exposure(n, k, t, c, rounds, per_client, round_union, run_union, trials, hits)


def _fmt(p: float | None) -> str:
    if p is None:
        return "-"
    return "0" if p == 0 else f"{p:.1e}"


def report(e: Exposure) -> str:
    lines = [f"n = {e.n}, k = {e.k}, t = {e.t}, colluding clients = {e.corrupted} of {e.n}",
             f"one honest client, one round: P[exposed] = {_fmt(e.per_client)} (exact)",
             f"some client of a round: <= {_fmt(e.round_union)} (union bound)"]
    if e.trials:
        lines.append(f"  Monte Carlo: {e.round_hits} of {e.trials} rounds "
                     f"(estimate {_fmt(e.round_estimate)}, 95% upper bound "
                     f"{_fmt(e.round_upper)})")
    lines.append(f"some client of a run of {e.rounds} rounds: <= {_fmt(e.run_union)} "
                 "(union bound)")
    if e.trials:
        upper = e.round_upper
        assert upper is not None
        lines.append(f"  from the Monte Carlo estimate: {_fmt(e.run_estimate)} "
                     f"(95% upper bound {_fmt(1 - (1 - upper) ** e.rounds)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, required=True, help="clients in a round")
    parser.add_argument("--k", type=int, help="neighbours (default: the 'auto' degree)")
    parser.add_argument("--t", type=int, help="threshold (default: the majority k // 2 + 1)")
    parser.add_argument("--corrupt", type=float, required=True,
                        help="fraction of the round's clients colluding with the server")
    parser.add_argument("--rounds", type=int, default=1, help="rounds in the run")
    parser.add_argument("--trials", type=int, default=20000, help="Monte Carlo rounds (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    options = SecAggOptions()
    k = options.degree(args.n) if args.k is None else args.k
    t = options.shares_needed(effective_degree(k, args.n)) if args.t is None else args.t
    print(report(exposure(args.n, k, t, args.corrupt, rounds=args.rounds, trials=args.trials,
                          seed=args.seed)))


if __name__ == "__main__":  # pragma: no cover
    main()

__all__ = ["Exposure", "exposure", "main", "report"]
