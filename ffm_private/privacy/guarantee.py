"""The run's privacy guarantee, in words, for the run summary.

Every figure in the statement comes from the :class:`~ffm_private.privacy.planner.PrivacyPlan`
(or the ledger's recorded spends): the text never states an epsilon the plan does not provide,
and it refuses combinations whose guarantee would not hold (distributed noise without a
protocol that hides individual updates).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ffm_private.privacy.errors import UnsupportedClaimError
from ffm_private.privacy.planner import PrivacyPlan

NO_DP = ("No differential privacy: shared updates carry no formal guarantee; personal "
         "parameters never leave the clients.")


def check_example_level_coverage(*, personal_trains_on_client_data: bool,
                                 personal_feeds_shared_update: bool,
                                 personal_uses_dp: bool) -> None:
    """Refuse an example-level claim that DP-SGD on the shared part alone would not cover.

    If the personal adapter is trained on the same interactions and influences the shared
    update (through the gate, or as its starting point), it is part of the mechanism: train it
    with DP-SGD too and add its steps to the plan (``personal_steps``), or claim only
    user-level DP.
    """
    if personal_trains_on_client_data and personal_feeds_shared_update and not personal_uses_dp:
        raise UnsupportedClaimError(
            "example-level DP is not supported for this configuration: the personal adapter is "
            "trained without DP on the client's interactions and influences the shared update; "
            "train it with DP-SGD (plan personal_steps/personal_rate) or use mode = 'user'")


def guarantee_statement(plan: PrivacyPlan | None, *, clipping_norm: float | None = None,
                        protocol: str = "plaintext", hides_updates: bool | None = None,
                        min_survivors: int | None = None,
                        rounds_completed: int | None = None,
                        ledger_summary: Mapping[str, Any] | None = None,
                        test_seeded: bool = False, expected_clients: float | None = None,
                        public_users: int = 0) -> str:
    """One paragraph: unit of privacy, epsilon, delta, accountant, who must be trusted, caps.

    ``rounds_completed`` (a run stopped early) states the plan's epsilon after those rounds;
    ``ledger_summary`` (:meth:`PrivacyLedger.summary`) adds the per-user caps and spends;
    ``test_seeded`` marks noise drawn from a fixed seed, which protects nothing.
    ``hides_updates`` is the protocol object's capability (``not
    reveals_individual_updates``); ``None`` (not yet known) reads it as "reveals".
    ``public_users`` is the number of public pretraining users outside the claim.
    """
    if plan is None:
        return NO_DP
    hides = bool(hides_updates)
    distributed = plan.mode == "user" and plan.noise_placement == "distributed"
    if distributed and not hides:
        raise UnsupportedClaimError(
            f"distributed noise with protocol {protocol!r} shows the server each update with "
            "only its share of the noise: no user-level claim; use secagg or he, or central "
            "noise with a trusted server")
    if distributed and not min_survivors:
        raise UnsupportedClaimError("distributed noise needs min_survivors to state a claim")

    eps, rounds_note = plan.epsilon, ""
    if rounds_completed is not None and rounds_completed < plan.rounds:
        eps = plan.epsilon_after_rounds(rounds_completed)
        rounds_note = (f" The run stopped after {rounds_completed} of {plan.rounds} planned "
                       f"rounds; the full plan would reach epsilon = {plan.epsilon:.3f}.")
    acc = plan.accountant.upper()
    c = f"{clipping_norm:g}" if clipping_norm is not None else "C"
    sigma = plan.noise_multiplier
    parts: list[str] = []

    if plan.mode == "example":
        mech = (f"DP-SGD on the client with per-example gradients clipped to L2 norm {c}, "
                f"Gaussian noise multiplier {sigma:.4f}, Poisson sampling of examples at rate "
                f"at most {plan.example_rate:.4g} and at most {plan.local_steps} steps per round")
        if plan.personal_steps:
            mech += (f", plus {plan.personal_steps} DP-SGD steps on the personal adapter at rate "
                     f"at most {plan.personal_rate:.4g} (composed)")
        parts.append(
            f"Example-level differential privacy: adding or removing any single interaction of "
            f"a user changes the probability of anything that user's client shares by at most a "
            f"factor e^epsilon plus delta, with epsilon = {eps:.3f} and delta = {plan.delta:g} "
            f"({acc} accountant, for a user taking part in at most {plan.planned_charges} "
            f"rounds; {mech}).")
        parts.append(
            "The noise is added on the device from randomness derived from the client's own "
            "secret, so neither the server nor anyone observing updates or models needs to be "
            "trusted for this guarantee. It protects single "
            "interactions: a user's data as a whole (their overall tastes) is not protected "
            "at this epsilon.")
    elif not distributed:
        parts.append(
            f"User-level differential privacy: adding or removing all of one user's data changes "
            f"the probability of any sequence of released global models by at most a factor "
            f"e^epsilon plus delta, with epsilon = {eps:.3f} and delta = {plan.delta:g} ({acc} "
            f"accountant, {plan.rounds} rounds, each client sampled independently with "
            f"probability {plan.client_rate:g} per round; each update clipped to L2 norm {c}, "
            f"Gaussian noise of std {sigma:.4f} x {c} added to the sum, which is divided by the "
            f"public constant {expected_clients:g}; a noise-only step is released when nobody "
            "or too few took part).")
        sees = ("each client's update" if not hides
                else "the un-noised sum of the sampled clients' updates")
        parts.append(
            f"The server adds the noise, so the server must be trusted: it sees {sees}. The "
            "guarantee holds against everyone else, provided the client sampling is drawn from "
            "the server's own secret, which nobody else sees, and the set (or number) of "
            "participants per round is not published.")
    else:
        discrete = getattr(plan, "distributed_noise", "gaussian") == "discrete_gaussian"
        if discrete:
            noise = (f"each client rounds its clipped update onto an integer grid (conditional "
                     f"rounding) and adds discrete Gaussian noise whose sum over "
                     f"{min_survivors} shares is (1 / (2 x {sigma:.4f}^2))-zCDP (Kairouz, Liu "
                     f"and Steinke 2021), recorded as a Gaussian of noise multiplier "
                     f"{sigma:.4f}; {protocol} sums the integers exactly modulo its modulus")
        else:
            noise = (f"each client adds Gaussian noise of std {sigma:.4f} x {c} / "
                     f"sqrt({min_survivors}) before {protocol} encoding")
        parts.append(
            f"User-level differential privacy against the server: replacing all of one user's "
            f"data (their update by zeros) changes the probability of anything the server "
            f"observes by at most a factor e^epsilon plus delta, with epsilon = {eps:.3f} and "
            f"delta = {plan.delta:g} ({acc} accountant, for a user taking part in at most "
            f"{plan.planned_charges} of {plan.rounds} rounds; each update clipped to L2 norm "
            f"{c}; {noise}, and a round is released only if at least "
            f"{min_survivors} noise shares reach the sum).")
        if discrete:
            tail = ("the shares are integers and the sum is exact, so no fixed-point encoding "
                    "or clamp lies outside the accounting (a coordinate whose true sum leaves "
                    "the modulus wraps around: a loss of accuracy, not of privacy).")
        else:
            tail = ("the accounting treats the noise as continuous Gaussian (the protocol's "
                    "fixed-point rounding is absorbed by clipping below C by its error bound, "
                    "and the float noise's floating-point effects are not accounted).")
        tail += (" Clients send nothing beside their noisy shares: no count of clipped "
                 "coordinates, no example count and no losses reach the server.")
        parts.append(
            f"Each client draws its noise share from its own secret. Nobody beyond the "
            f"{protocol} protocol needs to be trusted, as long as at least {min_survivors} "
            "surviving clients per round are honest (did not reveal their noise). Who takes "
            "part in a round is visible to the server and not protected; " + tail)
    if getattr(plan, "adaptive_clipping", False):
        parts.append(
            f"The clipping norm is adaptive (Andrew et al. 2021): it starts at {c} and tracks a "
            "quantile of the update norms from a noised count of unclipped clients; the update "
            f"noise is raised to {plan.update_noise_multiplier:.4f} x the current norm so that "
            "update sum and count together are the Gaussian mechanism with the multiplier "
            "above.")
    if public_users:
        parts.append(f"The {public_users} users of the public pretraining split are outside the "
                     "claim: their data trained the backbone without DP; they take part as "
                     "clients but are not protected or charged.")
    parts.append("In the in-process simulation every party's secret (each client's and the "
                 "server's) is stored on the one machine that runs it: whoever controls that "
                 "machine holds them all. Evaluation metrics computed on held-out items and the "
                 "round chosen on them are diagnostics outside the claim.")
    if rounds_note:
        parts.append(rounds_note.strip())
    if ledger_summary is not None:
        parts.append(_caps_sentence(ledger_summary, plan))
    if test_seeded:
        parts.append("WARNING: the noise was drawn from a fixed test seed and is reproducible: "
                     "this run carries NO privacy guarantee.")
    return " ".join(parts)


def _caps_sentence(summary: Mapping[str, Any], plan: PrivacyPlan) -> str:
    users = summary.get("users", [])
    caps = [u["cap"] for u in users]
    if not users:
        return "Per-user caps: no user was charged."
    lo, hi = min(caps), max(caps)
    cap_text = f"caps {lo:.3g} to {hi:.3g}" if lo != hi else f"cap {lo:.3g} for every user"
    text = (f"Per-user budgets ({cap_text}; the default cap is "
            f"{summary.get('default_cap', plan.epsilon):.3g}): {summary['users_charged']} users "
            f"were charged, the largest recorded spend is epsilon = "
            f"{summary['max_epsilon']:.3f}, and {summary['users_with_declines']} users declined "
            "at least one round because their next charge would have exceeded their cap.")
    over = summary.get("users_over_cap", 0)
    if over:
        text += f" {over} users' recorded spends exceed their caps (their cap was lowered later)."
    return text


__all__ = ["NO_DP", "check_example_level_coverage", "guarantee_statement"]
