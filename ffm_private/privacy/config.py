"""The ``[privacy]`` table of a run configuration, validated.

``ffm_private.config.Config.privacy`` holds the raw table; :meth:`PrivacyConfig.from_dict`
turns it into a frozen, checked object and raises :class:`ffm_private.config.ConfigError`
naming ``privacy.<key>`` for anything wrong. Every field is documented in its metadata (and
in ``docs/privacy.md``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

from ffm_private.config import ConfigError
from ffm_private.privacy.accounting import ACCOUNTANTS
from ffm_private.privacy.errors import AccountingError, UnsupportedClaimError
from ffm_private.privacy.planner import PrivacyPlan

if TYPE_CHECKING:  # pragma: no cover
    from ffm_private.client import LocalTrainingConfig
    from ffm_private.privacy.dpsgd import ExamplePlanInputs

PRIVACY_MODES = ("none", "example", "user")
AUTO = "auto"
"""``accountant`` / ``distributed_noise``: chosen from the placement and the protocol's
capabilities (:meth:`PrivacyConfig.for_protocol`)."""
DISTRIBUTED_NOISES = ("gaussian", "discrete_gaussian")
NOISE_PLACEMENTS = ("central", "distributed")
DELTA_FACTOR = 10
"""delta must be at most ``1 / (DELTA_FACTOR * n)`` for ``n`` protected units."""
DEFAULT_REFERENCE_SIZE = 100
"""Interactions per user that example-level DP-SGD is sized for unless the config says
otherwise: a round public figure, of the order of MovieLens users' counts. It is never
measured on the data being protected."""


def _f(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy of a run: what is protected, how much, and where noise is added."""

    mode: str = _f("none", "none (no DP), example (one interaction is protected: DP-SGD on the "
                   "client) or user (one user's whole data: clipped updates, Gaussian noise).")
    target_epsilon: float = _f(0.0, "Epsilon the run must not exceed (worst-case user). "
                               "Required for example/user unless noise_multiplier is set.")
    noise_multiplier: float = _f(0.0, "Fixed noise multiplier instead of a target epsilon "
                                 "(0: search it from target_epsilon); the epsilon it gives is "
                                 "what the run claims.")
    delta: float = _f(1e-5, "Delta of the (epsilon, delta) guarantee; must be well below "
                      "1/(number of protected units) unless allow_large_delta.")
    clipping_norm: float = _f(1.0, "L2 norm C each client update (user) or per-example "
                              "gradient (example) is clipped to.")
    accountant: str = _f(AUTO, "auto (default: prv for central noise, example mode and the "
                         "float distributed Gaussian; rdp for the distributed discrete Gaussian, "
                         "whose zCDP bound only RDP composes), prv (tight) or rdp "
                         "(conservative); gdp is refused for claims.")
    noise_placement: str = _f("central", "user mode: central (trusted server adds the noise) "
                              "or distributed (each client adds its share before masking).")
    distributed_noise: str = _f(AUTO, "distributed: auto (default: discrete_gaussian when the "
                                "protocol has an exact integer path, i.e. declares an "
                                "integer_modulus, as secagg and he with scheme bfv do; else "
                                "gaussian), discrete_gaussian (integer shares summed exactly "
                                "modulo the protocol's integer_modulus, Kairouz-Liu-Steinke "
                                "2021; accounted with rdp) or gaussian (float shares through "
                                "the protocol's fixed-point codec).")
    ddg_gamma: float = _f(0.0, "discrete_gaussian: grid step of the integer shares (0: the "
                          "finest step whose sums of all clients' shares fit in the modulus, "
                          "true values plus 8 std of the summed noise; see docs/privacy.md).")
    mechanism_kind: str = _f(AUTO, "auto (the built-in mechanism of mode, noise_placement, "
                             "distributed_noise and adaptive_clipping) or the name of a "
                             "mechanism registered with ffm_private.registry."
                             "register_mechanism (docs/extending.md); it must serve the "
                             "mode and placement and charge the plan's accounting events.")
    min_survivors: int = _f(0, "distributed: fewest clients whose noise shares must reach the "
                            "sum (honest survivors); the round is discarded below it.")
    expected_clients_per_round: float = _f(0.0, "user mode, central noise (required there): "
                                           "the public constant the noisy sum is divided by, "
                                           "typically q x the number of users you expect; "
                                           "never counted from the data, so one user more or "
                                           "less cannot change the scale of the noise; also "
                                           "the divisor of the adaptive-clipping count.")
    max_participations: int = _f(0, "example / distributed user mode: most rounds one user may "
                                 "take part in (0: all rounds); the plan is sized for it.")
    per_user_caps_file: str = _f("", "CSV (user,cap) or TOML ([caps] user = cap) with per-user "
                                 "epsilon caps.")
    default_cap: float = _f(0.0, "Epsilon cap of users absent from the caps file (0: the "
                            "plan's epsilon).")
    allow_large_delta: bool = _f(False, "Accept delta > 1/(10 n); such a delta permits "
                                 "releasing a few units' data outright.")
    reference_size: int = _f(DEFAULT_REFERENCE_SIZE, "example mode: training interactions "
                             "per user the DP-SGD plan assumes, from public knowledge (never "
                             "measured on the private data). Sets the sampling rate "
                             "min(1, batch_size / reference_size), the steps and the divisor; "
                             "users with more or fewer interactions run the same rate and "
                             "steps, so the plan covers them.")
    adaptive_clipping: bool = _f(False, "user mode, central noise: the clipping norm tracks a "
                                 "quantile of the update norms from a noisy count of unclipped "
                                 "clients (Andrew et al. 2021); clipping_norm is the initial "
                                 "value. The plan's epsilon is unchanged: the update noise "
                                 "is raised to pay for the count.")
    clip_target_quantile: float = _f(0.5, "adaptive_clipping: fraction of clients whose update "
                                     "should be left unclipped.")
    clip_learning_rate: float = _f(0.2, "adaptive_clipping: step of the geometric update "
                                   "C <- C exp(-lr (unclipped fraction - quantile)).")
    clip_count_noise: float = _f(0.0, "adaptive_clipping: std of the Gaussian noise on the "
                                 "count of unclipped clients (required; must exceed half the "
                                 "noise multiplier; about 0.05 x expected_clients_per_round).")
    noise_seed: int = _f(-1, "Tests and demos only: draw noise and client sampling from this "
                         "fixed seed, so runs are reproducible and protect NOTHING (the summary "
                         "says so). -1: each party's own secret (clients/<i>/secret.key, "
                         "server/secret.key in the run directory).")

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None,
                  n_units: int | None = None) -> PrivacyConfig:
        """Parse and validate the ``[privacy]`` table.

        ``n_units`` is the number of protected units (users for ``user``, interactions for
        ``example``); when given, delta is checked against it (see :meth:`check_delta_for`).
        """
        raw = dict(raw or {})
        hints = get_type_hints(cls)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"unknown key privacy.{unknown[0]}; known keys: {sorted(known)}")
        kwargs = {k: _coerce(f"privacy.{k}", v, hints[k]) for k, v in raw.items()}
        cfg = cls(**kwargs)
        cfg.validate()
        if n_units is not None:
            cfg.check_delta_for(n_units)
        return cfg

    def validate(self) -> PrivacyConfig:
        """Check every field and their combinations; raise :class:`ConfigError`."""
        if self.mode not in PRIVACY_MODES:
            raise ConfigError(f"privacy.mode = {self.mode!r} is not one of {list(PRIVACY_MODES)}")
        if self.mode == "none":
            changed = [f.name for f in dataclasses.fields(self)
                       if f.name != "mode" and getattr(self, f.name) != f.default]
            if changed:
                raise ConfigError(f"privacy.{changed[0]} is set but privacy.mode = 'none': set "
                                  "mode = 'example' or 'user' to get a guarantee")
            return self
        _num("privacy.target_epsilon", self.target_epsilon, allow_zero=True)
        _num("privacy.noise_multiplier", self.noise_multiplier, allow_zero=True)
        if (self.target_epsilon > 0) == (self.noise_multiplier > 0):
            raise ConfigError("set exactly one of privacy.target_epsilon (> 0) and "
                              f"privacy.noise_multiplier (> 0) for mode = {self.mode!r}")
        if isinstance(self.delta, bool) or not 0.0 < self.delta < 1.0:
            raise ConfigError(f"privacy.delta = {self.delta!r} must satisfy 0 < delta < 1")
        _num("privacy.clipping_norm", self.clipping_norm)
        if self.accountant == "gdp":
            raise ConfigError("privacy.accountant = 'gdp' is refused for claims (a central-limit "
                              "approximation that can under-state epsilon); use prv or rdp")
        if self.accountant != AUTO and self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"privacy.accountant = {self.accountant!r} is not one of "
                              f"{[AUTO, *ACCOUNTANTS]}")
        if self.noise_placement not in NOISE_PLACEMENTS:
            raise ConfigError(f"privacy.noise_placement = {self.noise_placement!r} is not one "
                              f"of {list(NOISE_PLACEMENTS)}")
        distributed = self.mode == "user" and self.noise_placement == "distributed"
        if self.mode == "example" and self.noise_placement != "central":
            raise ConfigError("privacy.noise_placement applies to mode = 'user'; example-level "
                              "DP-SGD adds its noise on the client already")
        if self.min_survivors < 0:
            raise ConfigError(f"privacy.min_survivors = {self.min_survivors} must be >= 0")
        if distributed and self.min_survivors < 1:
            raise ConfigError("privacy.min_survivors (>= 1) is required with noise_placement = "
                              "'distributed': each client's share is sized for it")
        if not distributed and self.min_survivors:
            raise ConfigError("privacy.min_survivors applies only to noise_placement = "
                              "'distributed' in mode = 'user'")
        self._validate_distributed_noise(distributed)
        self._validate_mechanism_kind()
        _num("privacy.expected_clients_per_round", self.expected_clients_per_round,
             allow_zero=True)
        if self.mode == "user" and not distributed and self.expected_clients_per_round <= 0:
            raise ConfigError(
                "privacy.expected_clients_per_round (> 0) is required with noise_placement = "
                "'central': the noisy sum is divided by this public constant (typically "
                "federated.client_fraction x the number of users); dividing by a count of the "
                "data would let the noise scale reveal whether a user is in the dataset")
        if self.expected_clients_per_round and (self.mode != "user" or distributed):
            raise ConfigError("privacy.expected_clients_per_round applies only to mode = "
                              "'user' with noise_placement = 'central'")
        if self.max_participations < 0:
            raise ConfigError(f"privacy.max_participations = {self.max_participations} must "
                              "be >= 0")
        if self.mode == "user" and not distributed and self.max_participations:
            raise ConfigError("privacy.max_participations does not apply to user-level DP with "
                              "central noise: every round costs every user in the pool")
        self._validate_example_sizing()
        self._validate_adaptive_clipping()
        _num("privacy.default_cap", self.default_cap, allow_zero=True)
        if self.noise_seed < -1:
            raise ConfigError(f"privacy.noise_seed = {self.noise_seed} must be -1 (secret "
                              "randomness) or a seed >= 0 (tests only: no privacy)")
        if self.per_user_caps_file and Path(self.per_user_caps_file).suffix.lower() not in (
                ".csv", ".toml"):
            raise ConfigError(f"privacy.per_user_caps_file = {self.per_user_caps_file!r} must "
                              "be a .csv or .toml file")
        return self

    def _validate_mechanism_kind(self) -> None:
        if self.mechanism_kind == AUTO:
            return
        from ffm_private.registry import MECHANISMS, RegistryError

        try:
            cls = MECHANISMS.get(self.mechanism_kind)
        except RegistryError as err:
            raise ConfigError(f"privacy.mechanism_kind: {err} (import the module that "
                              "registers it before the configuration is built)") from None
        if self.mode != "none" and (self.mode, self.noise_placement) not in tuple(cls.serves):
            raise ConfigError(f"privacy.mechanism_kind = {self.mechanism_kind!r} serves "
                              f"{list(cls.serves)} (mode, noise_placement), not "
                              f"({self.mode!r}, {self.noise_placement!r})")

    def _validate_distributed_noise(self, distributed: bool) -> None:
        if self.distributed_noise not in (AUTO, *DISTRIBUTED_NOISES):
            raise ConfigError(f"privacy.distributed_noise = {self.distributed_noise!r} is not "
                              f"one of {[AUTO, *DISTRIBUTED_NOISES]}")
        _num("privacy.ddg_gamma", self.ddg_gamma, allow_zero=True)
        if self.distributed_noise == "gaussian" and self.ddg_gamma:
            raise ConfigError("privacy.ddg_gamma applies to distributed_noise = "
                              "'discrete_gaussian'")
        if self.distributed_noise == "discrete_gaussian" and not distributed:
            raise ConfigError("privacy.distributed_noise = 'discrete_gaussian' applies to "
                              "mode = 'user' with noise_placement = 'distributed'")
        if self.ddg_gamma and not distributed:
            raise ConfigError("privacy.ddg_gamma applies to mode = 'user' with noise_placement "
                              "= 'distributed' (the discrete Gaussian's grid step)")
        if self.distributed_noise == "discrete_gaussian" and self.accountant == "prv":
            raise ConfigError(_PRV_REFUSED.format(what="the distributed discrete Gaussian"))

    # -- resolution against the protocol --------------------------------------------------------
    @property
    def distributed(self) -> bool:
        """User-level DP with each client adding its share of the noise."""
        return self.mode == "user" and self.noise_placement == "distributed"

    @property
    def resolved(self) -> bool:
        """Whether ``accountant`` and ``distributed_noise`` are concrete (not ``auto``)."""
        return AUTO not in (self.accountant, self.distributed_noise)

    def for_protocol(self, protocol: Any) -> PrivacyConfig:
        """This config with ``auto`` resolved against ``protocol``'s declared capabilities.

        ``distributed_noise = auto`` becomes ``discrete_gaussian`` when the protocol declares
        an exact integer path (``integer_modulus``; never its name) under distributed
        placement, else ``gaussian``; ``accountant = auto`` becomes ``rdp`` for the discrete
        Gaussian and ``prv`` otherwise. ``protocol`` may be ``None`` when nothing depends on
        it (central noise, example mode, explicit choices). An explicit ``discrete_gaussian``
        with a protocol without the integer path, and an explicit ``prv`` with the discrete
        Gaussian, are refused with the reason.
        """
        if not self.enabled:
            return self
        noise = self.distributed_noise
        integer = None if protocol is None else getattr(protocol, "integer_modulus", None)
        name = getattr(protocol, "name", repr(protocol))
        if not self.distributed:
            noise = "gaussian"
        elif noise == AUTO:
            if protocol is None:
                raise ConfigError("privacy.distributed_noise = 'auto' depends on the protocol's "
                                  "capabilities: resolve it with PrivacyConfig.for_protocol")
            noise = "discrete_gaussian" if integer is not None else "gaussian"
        elif noise == "discrete_gaussian" and protocol is not None and integer is None:
            raise UnsupportedClaimError(
                f"privacy.distributed_noise = 'discrete_gaussian' with protocol {name!r}: it "
                "has no exact integer path (integer_modulus); use secagg, or he with scheme "
                "bfv, or distributed_noise = 'gaussian'")
        if noise == "gaussian" and self.ddg_gamma:
            raise ConfigError(f"privacy.ddg_gamma applies to the discrete Gaussian, but the "
                              f"distributed noise with protocol {name!r} is the float Gaussian")
        accountant = self.accountant
        if accountant == AUTO:
            accountant = "rdp" if noise == "discrete_gaussian" else "prv"
        elif accountant == "prv" and noise == "discrete_gaussian":
            raise ConfigError(
                _PRV_REFUSED.format(what=f"the distributed discrete Gaussian (the default "
                                    f"distributed noise of protocol {name!r}, which has an "
                                    "exact integer path)")
                + "; or keep PRV with distributed_noise = 'gaussian' (float shares)")
        return dataclasses.replace(self, distributed_noise=noise, accountant=accountant)

    def for_protocol_config(self, name: str, options: Mapping[str, Any] | None = None
                            ) -> PrivacyConfig:
        """:meth:`for_protocol` for the protocol a run config names, built from its options
        (only when the choice depends on it)."""
        needs = self.enabled and self.distributed and self.distributed_noise != "gaussian"
        return self.for_protocol(_probe_protocol(name, options) if needs else None)

    def _validate_example_sizing(self) -> None:
        r = self.reference_size
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ConfigError(f"privacy.reference_size = {r!r} must be an integer >= 1")
        if self.mode != "example" and r != DEFAULT_REFERENCE_SIZE:
            raise ConfigError("privacy.reference_size applies to mode = 'example' (it sizes "
                              "DP-SGD on the client)")

    def _validate_adaptive_clipping(self) -> None:
        keys = ("clip_target_quantile", "clip_learning_rate", "clip_count_noise")
        if not self.adaptive_clipping:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            changed = [k for k in keys if getattr(self, k) != defaults[k]]
            if changed:
                raise ConfigError(f"privacy.{changed[0]} is set but privacy.adaptive_clipping "
                                  "is false")
            return
        if self.mode != "user" or self.noise_placement != "central":
            raise ConfigError("privacy.adaptive_clipping is supported for mode = 'user' with "
                              "noise_placement = 'central' only (the trusted server noises "
                              "the count of unclipped clients)")
        q = self.clip_target_quantile
        if not math.isfinite(q) or not 0.0 < q < 1.0:
            raise ConfigError(f"privacy.clip_target_quantile = {q!r} must satisfy 0 < q < 1")
        _num("privacy.clip_learning_rate", self.clip_learning_rate)
        if not self.clip_count_noise:
            raise ConfigError("privacy.clip_count_noise (> 0) is required with "
                              "adaptive_clipping (about 0.05 x expected_clients_per_round)")
        _num("privacy.clip_count_noise", self.clip_count_noise)
        if not self.expected_clients_per_round:
            raise ConfigError("privacy.expected_clients_per_round (> 0, public) is required "
                              "with adaptive_clipping: it divides the noisy count")

    # -- derived -------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """Whether the run applies DP at all."""
        return self.mode != "none"

    @property
    def unit(self) -> str:
        """The protected unit, in words."""
        return {"none": "nothing", "example": "interaction", "user": "user"}[self.mode]

    def check_delta_for(self, n_units: int) -> None:
        """Refuse delta > 1/(10 n) for n protected units unless ``allow_large_delta``.

        A mechanism that publishes each unit's data with probability delta is (0, delta)-DP;
        with delta near 1/n it would expect to leak about one unit outright.
        """
        if not self.enabled:
            return
        if isinstance(n_units, bool) or not isinstance(n_units, int) or n_units < 1:
            raise ConfigError(f"number of protected units = {n_units!r} must be an integer >= 1")
        bound = 1.0 / (DELTA_FACTOR * n_units)
        if self.delta > bound and not self.allow_large_delta:
            raise ConfigError(
                f"privacy.delta = {self.delta:g} is not well below 1/n for n = {n_units} "
                f"protected {self.unit}s (need delta <= 1/({DELTA_FACTOR} n) = {bound:.3g}); "
                "lower delta or set privacy.allow_large_delta = true")

    def caps(self) -> dict[str, float]:
        """Per-user caps from ``per_user_caps_file`` (empty when none is configured)."""
        from ffm_private.privacy.ledger import load_caps

        return load_caps(self.per_user_caps_file) if self.per_user_caps_file else {}

    def plan(self, *, rounds: int, client_rate: float, local_steps: int = 0,
             example_rate: float = 0.0, personal_steps: int = 0,
             personal_rate: float = 0.0) -> PrivacyPlan:
        """The run's :class:`PrivacyPlan` (noise searched once from the target)."""
        if not self.enabled:
            raise ConfigError("privacy.mode = 'none' has no privacy plan")
        if not self.resolved:
            return self.for_protocol(None).plan(
                rounds=rounds, client_rate=client_rate, local_steps=local_steps,
                example_rate=example_rate, personal_steps=personal_steps,
                personal_rate=personal_rate)
        kwargs: dict[str, Any] = dict(
            mode=self.mode, delta=self.delta, rounds=rounds, client_rate=client_rate,
            accountant=self.accountant, max_participations=self.max_participations)
        if self.mode == "user":
            kwargs["noise_placement"] = self.noise_placement
            if self.distributed_noise != "gaussian":
                kwargs["distributed_noise"] = self.distributed_noise
            if self.adaptive_clipping:
                kwargs.update(adaptive_clipping=True, clip_count_noise=self.clip_count_noise)
        else:
            kwargs.update(local_steps=local_steps, example_rate=example_rate,
                          personal_steps=personal_steps, personal_rate=personal_rate)
        try:
            if self.noise_multiplier:
                return PrivacyPlan.for_noise(self.noise_multiplier, **kwargs)
            return PrivacyPlan.for_target(target_epsilon=self.target_epsilon, **kwargs)
        except AccountingError as err:
            raise ConfigError(f"privacy plan: {err}") from err

    def example_inputs(self, local_cfg: LocalTrainingConfig, *,
                       has_personal: bool = True) -> ExamplePlanInputs:
        """Example-level DP-SGD sizing from the training config and ``reference_size`` only.

        Also refuses a personal phase that would train on the client's data without DP.
        """
        from ffm_private.privacy.dpsgd import check_coverage, example_plan_inputs

        if self.mode != "example":
            raise ConfigError("example_inputs applies to privacy.mode = 'example'")
        try:
            example = example_plan_inputs(None, local_cfg, has_personal=has_personal,
                                          reference_size=self.reference_size)
        except ValueError as err:
            if isinstance(err, UnsupportedClaimError):
                raise
            raise ConfigError(str(err)) from err
        check_coverage(has_personal=has_personal, personal_epochs=local_cfg.personal_epochs,
                       personal_steps=example.personal_steps)
        return example

    def run_inputs(self, *, rounds: int, client_rate: float,
                   local_cfg: LocalTrainingConfig | None = None, has_personal: bool = True
                   ) -> tuple[dict[str, Any], ExamplePlanInputs | None]:
        """The keyword arguments of :meth:`plan` a run uses, and its DP-SGD sizing.

        The one place they are derived: the run and ``ffm-private budget --config`` both call
        it, so they plan the same mechanism. Nothing here reads the users' data.
        """
        inputs: dict[str, Any] = {"rounds": rounds, "client_rate": client_rate}
        example = None
        if self.mode == "example":
            if local_cfg is None:
                raise ConfigError("example-level DP needs the local training configuration")
            example = self.example_inputs(local_cfg, has_personal=has_personal)
            inputs.update(example.plan_kwargs())
        return inputs, example

    def run_plan(self, *, rounds: int, client_rate: float,
                 local_cfg: LocalTrainingConfig | None = None,
                 has_personal: bool = True) -> PrivacyPlan:
        """The :class:`PrivacyPlan` a run with these settings plans (see :meth:`run_inputs`)."""
        inputs, _ = self.run_inputs(rounds=rounds, client_rate=client_rate,
                                    local_cfg=local_cfg, has_personal=has_personal)
        return self.plan(**inputs)

    def mechanism(self, plan: PrivacyPlan, *, rounding_margin: float = 0.0,
                  integer_modulus: int | None = None, dim: int = 0,
                  max_clients: int = 0) -> Any:
        """The production :class:`~ffm_private.privacy.mechanism.Mechanism` of ``plan``.

        The one factory the run and the A6 audit share (so the audit tests what runs). The
        protocol's figures (rounding margin, integer modulus) come from ``bind_protocol``.
        """
        from ffm_private.privacy.adaptive_clipping import AdaptiveClipSettings
        from ffm_private.privacy.mechanism import mechanism_for

        adaptive = (AdaptiveClipSettings(self.clip_target_quantile, self.clip_learning_rate,
                                         self.clip_count_noise, self.expected_clients_per_round)
                    if self.adaptive_clipping else None)
        return mechanism_for(plan, clipping_norm=self.clipping_norm,
                             min_survivors=self.min_survivors,
                             expected_clients=self.expected_clients_per_round,
                             rounding_margin=rounding_margin, adaptive=adaptive,
                             integer_modulus=integer_modulus, dim=dim,
                             max_clients=max_clients, gamma=self.ddg_gamma,
                             kind=self.mechanism_kind)

    def cap_for_plan(self, plan: PrivacyPlan) -> float:
        """The default per-user cap: ``default_cap`` if set, else the plan's epsilon."""
        return self.default_cap if self.default_cap > 0 else plan.epsilon


_PRV_REFUSED = ("privacy.accountant = 'prv' cannot account {what}: its guarantee is a zCDP "
                "bound, which only RDP composes soundly (PRV would under-state epsilon); set "
                "privacy.accountant = 'rdp' or 'auto'")


def _probe_protocol(name: str, options: Mapping[str, Any] | None) -> Any:
    """The protocol a config names, built only to read its declared capabilities."""
    from protocols import registry

    try:
        return registry.create(name, dict(options or {}))
    except (ValueError, TypeError, OverflowError) as err:
        raise ConfigError(f"[protocol] {err}") from err


def resolved_privacy(cfg: Any) -> PrivacyConfig:
    """The ``[privacy]`` table of a run config, with ``auto`` resolved against its protocol.

    What the run, ``ffm-private budget --config`` and the audit all plan from.
    """
    raw = PrivacyConfig.from_dict(cfg.privacy)
    return raw.for_protocol_config(cfg.protocol.name, cfg.protocol.options)


def _num(key: str, value: float, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} = {value!r} must be a finite number "
                          f"{'>= 0' if allow_zero else '> 0'}")


def _coerce(key: str, value: Any, typ: Any) -> Any:
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def describe_privacy_fields() -> str:
    """Every ``[privacy]`` key with its default and meaning, TOML-like."""
    lines = [f"[privacy]  # {PrivacyConfig.__doc__}"]
    for f in dataclasses.fields(PrivacyConfig):
        d = f.default
        shown = ("true" if d else "false") if isinstance(d, bool) else (
            f'"{d}"' if isinstance(d, str) else repr(d))
        lines.append(f"{f.name} = {shown}    # {f.metadata['doc']}")
    return "\n".join(lines)


__all__ = ["AUTO", "DEFAULT_REFERENCE_SIZE", "DELTA_FACTOR", "DISTRIBUTED_NOISES",
           "NOISE_PLACEMENTS", "PRIVACY_MODES", "PrivacyConfig", "describe_privacy_fields",
           "resolved_privacy"]
