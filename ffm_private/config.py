"""Run configuration: one TOML file per run, validated at load, every default documented.

Each section is a frozen dataclass whose fields carry a ``doc`` string; ``ffm-private
--help-config`` prints them, so the documentation cannot drift from the code. Unknown
sections or keys, wrong types and out-of-range values raise :class:`ConfigError` naming
the offending ``section.key``.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import tomli_w

from ffm_private.errors import FFMPrivateError

#: Largest integer any field accepts: counts and sizes beyond it only exhaust memory.
MAX_INT = 2**31 - 1
#: Config files beyond this size are refused before parsing (a run config is a few KiB).
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(FFMPrivateError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def _f(default: Any, doc: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and its documentation."""
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc}, **kwargs)
    return field(default=default, metadata={"doc": doc}, **kwargs)


@dataclass(frozen=True)
class DataConfig:
    """Where interactions come from and how users are split."""

    kind: str = _f("synthetic", "Dataset kind: synthetic, movielens-100k, movielens-1m or csv.")
    path: str = _f("", "Dataset directory (file for csv). For synthetic: where the generated "
                   "files go; empty means <run_dir>/data.")
    synthetic_preset: str = _f("small", "Synthetic size: small (quick runs), ml100k "
                               "(MovieLens-100K's shape) or ml100k-seq (that shape with "
                               "sessions, taste drift, item-to-item transitions and trending "
                               "items; docs/synthetic.md).")
    public_fraction: float = _f(0.2, "Fraction of users whose training data is public and used "
                                "to pretrain the frozen backbone (FedPA's recipe).")
    num_eval_negatives: int = _f(99, "Sampled negatives each held-out item is ranked against.")
    num_train_negatives: int = _f(4, "Training negatives per positive, resampled every round.")
    protocol: str = _f("isolated", "Training negatives: isolated (never one of the user's "
                       "evaluation candidates), pfedrec (any item outside the user's "
                       "training set: this project's earlier sampling) or pfedrec-official "
                       "(any item the user never interacted with, evaluation negatives "
                       "included, as the official PFedRec code: inflates sampled metrics). "
                       "The last two only for comparison with published figures; see "
                       "docs/data.md.")
    csv_user_col: str = _f("user", "csv: column holding the user id.")
    csv_item_col: str = _f("item", "csv: column holding the item id.")
    csv_timestamp_col: str = _f("timestamp", "csv: column holding the timestamp.")
    csv_delimiter: str = _f(",", "csv: field delimiter.")

    def validate(self) -> None:
        _choice("data.kind", self.kind, _registered("DATASETS"))
        _choice("data.synthetic_preset", self.synthetic_preset,
                ("small", "ml100k", "ml100k-seq"))
        _choice("data.protocol", self.protocol, ("isolated", "pfedrec", "pfedrec-official"))
        if self.kind != "synthetic" and not self.path.strip():
            raise ConfigError(f"data.path is required for data.kind = {self.kind!r}")
        _range("data.public_fraction", self.public_fraction, 0.0, 0.9, open_low=True)
        _range("data.num_eval_negatives", self.num_eval_negatives, 1, 100_000)
        _range("data.num_train_negatives", self.num_train_negatives, 1, 1_000)
        for name in ("csv_user_col", "csv_item_col", "csv_timestamp_col"):
            if not getattr(self, name).strip():
                raise ConfigError(f"data.{name} must be a non-empty column name")
        if len(self.csv_delimiter) != 1 or self.csv_delimiter in '"\r\n':
            raise ConfigError(f"data.csv_delimiter = {self.csv_delimiter!r} must be one "
                              "character other than a quote or a line break")


@dataclass(frozen=True)
class ModelConfig:
    """The recommender: foundation model with adapters, or a classic baseline."""

    kind: str = _f("ffm", "ffm-pool (alias ffm: frozen pooled-embedding backbone + shared "
                   "bottleneck adapters + local user embedding and gate), ffm-transformer "
                   "(frozen SASRec-style backbone + shared LoRA + local personal adapter), "
                   "fedmf (shares item embeddings) or pfedrec (PFedRec: shared item "
                   "embeddings post-tuned on the client, local score function). See "
                   "docs/models.md.")
    dim: int = _f(64, "Embedding dimension.")
    history_length: int = _f(20, "Most recent interactions the history encoder reads.")
    global_rank: int = _f(16, "Bottleneck width of the shared global adapter.")
    personal_rank: int = _f(0, "Bottleneck width of a local personal item adapter. 0 (the "
                            "default) has none: the personal parameters are the user "
                            "embedding and the gate between the global and the backbone item "
                            "view. A personal item adapter overfits a client's few "
                            "interactions over many rounds (see README, Quality).")
    personalization: bool = _f(True, "Train the personal parameters (user embedding, gate, "
                               "personal item adapter if personal_rank > 0). "
                               "False gives the global-only model.")
    layers: int = _f(1, "ffm-transformer: self-attention blocks (more cost more per client "
                     "step; bench/README.md). The global adapter is LoRA "
                     "of rank global_rank on every block's q, k, v, o and feed-forward "
                     "projections and on the scored item embeddings; personal_rank > 0 "
                     "adds a personal LoRA. See docs/models.md.")
    heads: int = _f(1, "ffm-transformer: attention heads (dim must be a multiple).")
    ffa_lora: bool = _f(False, "ffm-transformer: FFA-LoRA: the LoRA A factors stay frozen at "
                        "the backbone's seeded initialisation; only B is trained and sent "
                        "(exact aggregation, half the shared parameters).")
    lr_eta: float = _f(80.0, "pfedrec: the item-embedding learning rate is federated.lr x "
                       "items x lr_eta (SGD, as the official code); the score function uses "
                       "federated.personal_lr.")

    def validate(self) -> None:
        _choice("model.kind", self.kind, _registered("MODELS"))
        for name in ("dim", "history_length", "global_rank", "layers", "heads"):
            _range(f"model.{name}", getattr(self, name), 1, 4096)
        _range("model.personal_rank", self.personal_rank, 0, 4096)
        _range("model.lr_eta", self.lr_eta, 0.0, 1e12, open_low=True)
        if self.kind == "ffm-transformer" and self.dim % self.heads:
            raise ConfigError(f"model.dim = {self.dim} must be a multiple of model.heads = "
                              f"{self.heads}")


@dataclass(frozen=True)
class PretrainConfig:
    """Central pretraining of the backbone on public users."""

    epochs: int = _f(30, "Passes over the public users' training interactions.")
    lr: float = _f(0.005, "Adam learning rate.")
    batch_size: int = _f(1024, "Examples per step.")
    weight_decay: float = _f(0.0, "Adam weight decay.")
    checkpoint: str = _f("", "Load a pretrained backbone from this file instead of pretraining.")

    def validate(self) -> None:
        _range("pretrain.epochs", self.epochs, 0, 100_000)
        _range("pretrain.lr", self.lr, 0.0, None, open_low=True)
        _range("pretrain.batch_size", self.batch_size, 1, 1 << 24)
        _range("pretrain.weight_decay", self.weight_decay, 0.0, None)


@dataclass(frozen=True)
class FederatedConfig:
    """The federated loop: rounds, sampling, local training."""

    rounds: int = _f(20, "Federated rounds.")
    client_fraction: float = _f(1.0, "Fraction of clients sampled each round.")
    local_epochs: int = _f(1, "Local passes over a client's data for the shared update.")
    personal_epochs: int = _f(1, "Local passes that train the personal parameters first.")
    lr: float = _f(0.01, "Client Adam learning rate (fresh optimizer each round).")
    personal_lr: float = _f(0.05, "Client Adam learning rate for the personal parameters.")
    batch_size: int = _f(256, "Local examples per step.")
    server_lr: float = _f(1.0, "Server step on the mean shared update (1.0 is FedAvg).")
    eval_every: int = _f(1, "Evaluate every N rounds (and always after the last).")
    seed: int = _f(0, "Seed for every random choice of the run.")
    client_threads: int = _f(1, "Torch intra-op threads while clients train and while a run "
                             "evaluates (restored "
                             "afterwards); 0 keeps torch's setting. One thread is fastest for "
                             "tiny per-client tensors, and stays fast when other jobs load "
                             "the cores (bench/README.md).")
    engine: str = _f("loop", "How a round's clients are trained: loop (one after another, "
                     "the reference) or batched (blocks of clients as one stacked "
                     "computation, same per-client results to float tolerance; models "
                     "ffm-pool, ffm and fedmf, without example-level DP).")
    memory_budget_mb: int = _f(1024, "batched engine: the block of clients trained at once is "
                               "sized so that its estimated working memory stays under this.")

    def validate(self) -> None:
        _range("federated.rounds", self.rounds, 1, 1_000_000)
        _range("federated.client_fraction", self.client_fraction, 0.0, 1.0, open_low=True)
        _range("federated.local_epochs", self.local_epochs, 0, 100_000)
        _range("federated.personal_epochs", self.personal_epochs, 0, 100_000)
        _range("federated.lr", self.lr, 0.0, None, open_low=True)
        _range("federated.personal_lr", self.personal_lr, 0.0, None, open_low=True)
        _range("federated.batch_size", self.batch_size, 1, 1 << 24)
        _range("federated.server_lr", self.server_lr, 0.0, None, open_low=True)
        _range("federated.eval_every", self.eval_every, 1, None)
        _range("federated.seed", self.seed, 0, MAX_INT)
        _range("federated.client_threads", self.client_threads, 0, 1024)
        from ffm_private.engine import ENGINES

        _choice("federated.engine", self.engine, ENGINES)
        _range("federated.memory_budget_mb", self.memory_budget_mb, 1, 1 << 24)


@dataclass(frozen=True)
class ProtocolConfig:
    """How shared updates are aggregated."""

    name: str = _f("plaintext", "plaintext (server sees each update), secagg (SecAgg+) or he "
                   "(TenSEAL CKKS/BFV).")
    options: dict = _f({}, "Protocol options, e.g. {clip = 1.0, neighbours = 8}; see docs/.")

    def validate(self) -> None:
        from protocols.registry import available, protocol_class

        _choice("protocol.name", self.name, tuple(available()))
        for key, value in self.options.items():
            _check_option(f"protocol.options.{key}", value)
        try:  # each protocol checks the options it reads (cheap: no keys are made here)
            protocol_class(self.name).from_options(self.options)
        except (ValueError, TypeError, OverflowError) as err:
            raise ConfigError(f"[protocol] {err}") from None


@dataclass(frozen=True)
class EvaluationConfig:
    """Metrics computed at evaluation rounds."""

    k: int = _f(10, "Cut-off for HR@k and NDCG@k.")
    full_ranking: bool = _f(True, "Also rank the held-out item against every unseen item.")

    def validate(self) -> None:
        _range("evaluation.k", self.k, 1, 100_000)


@dataclass(frozen=True)
class ObservationConfig:
    """The observation log: what each party saw, for leakage audits (see docs/attacks.md)."""

    enabled: bool = _f(True, "Record the observation log (observations/ in the run directory).")
    rounds: list = _f([1, 2, -1], "Rounds to record; negative counts from the end (-1 = the "
                      "last round). Linkage audits need two rounds with the same clients.")
    max_clients: int = _f(4096, "At most this many clients' update vectors per round (the same "
                          "clients every round, chosen by a keyed hash); 0 records none. The "
                          "default records every client of runs up to 4096 users (all of "
                          "MovieLens-100K), so audits attack every user and use every public "
                          "user as a shadow.")
    dtype: str = _f("float32", "Storage of client update vectors: float32 or float16 (half "
                    "the bytes; a round whose values overflow float16 is kept in float32).")
    audit: bool = _f(False, "ffm-private train: end with a short leakage audit of this log "
                     "(A1, A3, A4 and the A6 canary check, seconds), print one verdict per "
                     "attack and write the report to <run_dir>/audit (--no-audit skips it).")

    def validate(self) -> None:
        if not isinstance(self.rounds, list) or not all(
                isinstance(r, int) and not isinstance(r, bool) and r != 0 for r in self.rounds):
            raise ConfigError(f"observation.rounds = {self.rounds!r} must be a list of non-zero "
                              "integers (negative counts from the last round)")
        for r in self.rounds:
            _range("observation.rounds", r, -MAX_INT, MAX_INT)
        _range("observation.max_clients", self.max_clients, 0, MAX_INT)
        _choice("observation.dtype", self.dtype, ("float32", "float16"))


@dataclass(frozen=True)
class DefenseConfig:
    """A defense on the shared update (see docs/defenses.md)."""

    kind: str = _f("none", "none, or subspace: each client projects its shared update onto "
                   "the orthogonal complement of a sensitive subspace (estimated from public "
                   "users only, shipped with the broadcast) before clipping, noise and "
                   "encoding. Not a formal guarantee.")
    rank: int = _f(8, "subspace: directions removed (at most; fewer when the public updates "
                   "carry no more attribute signal).")
    estimator: str = _f("linear", "subspace: linear (iterative nullspace projection over ridge "
                        "attribute classifiers) or spectral (top directions of "
                        "attribute-conditional second-moment differences).")
    refresh_every: int = _f(5, "subspace: re-estimate from the public users' updates of the "
                            "current broadcast every N rounds (round 1, 1 + N, ...).")
    ridge: float = _f(100.0, "subspace, linear: ridge strength relative to the mean squared "
                      "norm of the (centred) public updates. Large values (the "
                      "default) give class-mean differences, the steadiest estimate from few "
                      "public users; small ones overfit their noise.")

    def validate(self) -> None:
        _choice("defense.kind", self.kind, ("none", "subspace"))
        _choice("defense.estimator", self.estimator, ("linear", "spectral"))
        _range("defense.rank", self.rank, 1, 4096)
        _range("defense.refresh_every", self.refresh_every, 1, MAX_INT)
        _range("defense.ridge", self.ridge, 0.0, 1e12, open_low=True)


@dataclass(frozen=True)
class Config:
    """A whole run."""

    run_dir: str = _f("runs/quickstart", "Directory the run writes (config, metrics, "
                      "checkpoints, summary).")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    privacy: dict = _f({}, "Privacy settings: the [privacy] table (mode = none by default); "
                       "see docs/privacy.md.")
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    observation: ObservationConfig = field(default_factory=ObservationConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)

    def validate(self) -> Config:
        if not self.run_dir.strip():
            raise ConfigError("run_dir must be a non-empty path")
        for name in _SECTIONS:
            getattr(self, name).validate()
        from ffm_private.privacy.config import PrivacyConfig

        privacy = PrivacyConfig.from_dict(self.privacy)
        if self.federated.engine == "batched":
            from ffm_private.engine import batched_refusal

            refusal = batched_refusal(self.model.kind, privacy.mode)
            if refusal:
                raise ConfigError(refusal)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: Any) -> Config:
        """A copy with whole sections or ``section.key`` overrides replaced."""
        return from_dict(_merge(self.to_dict(), sections))


#: The first run (``ffm-private train`` without ``--config``; ``examples/quickstart.toml``):
#: the synthetic preset trained with user-level DP-FedAvg, each client adding its share of
#: the Gaussian noise before SecAgg+ masks its update, so the server sees only the noisy sum.
#: ``Config()`` itself stays plaintext (the library's neutral default).
QUICKSTART: dict[str, Any] = {
    "run_dir": "runs/quickstart",
    "federated.rounds": 10,
    # the faster engine for this model (equal to the loop: tests/core/test_batched_engine.py)
    "federated.engine": "batched",
    "protocol.name": "secagg",
    "observation.audit": True,
    "privacy": {
        "mode": "user",
        "target_epsilon": 8.0,
        "delta": 1e-5,
        "clipping_norm": 0.2,
        "noise_placement": "distributed",
        "min_survivors": 150,
    },
}


def quickstart() -> Config:
    """The built-in first run: private (user-level DP over SecAgg+), observation log on."""
    return Config().replace(**QUICKSTART)


def plaintext() -> Config:
    """The first run without DP and with plaintext aggregation (``--no-privacy``)."""
    return without_privacy(quickstart()).replace(run_dir="runs/plaintext")


def without_privacy(config: Config) -> Config:
    """``config`` with no DP and plaintext aggregation: the comparison run."""
    return config.replace(privacy={}, protocol={"name": "plaintext", "options": {}})


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "pretrain": PretrainConfig,
    "federated": FederatedConfig,
    "protocol": ProtocolConfig,
    "evaluation": EvaluationConfig,
    "observation": ObservationConfig,
    "defense": DefenseConfig,
}


def _registered(registry: str) -> tuple[str, ...]:
    """The kinds registered in ``ffm_private.registry.<registry>`` (built-ins load on demand)."""
    from ffm_private import registry as registries

    return getattr(registries, registry).names()


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} = {value!r} is not one of {list(choices)}")


def _check_option(key: str, value: Any) -> None:
    """Protocol options are TOML scalars: finite numbers, bounded integers, text without NUL.

    Each protocol checks the meaning of its own options; this refuses, naming the key, the
    values no option can take (which would otherwise surface as a TypeError deep inside).
    """
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ConfigError(f"{key} = {value!r} must lie in [-{MAX_INT}, {MAX_INT}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r} must be a finite number")
        if key.endswith(".min_clients"):
            raise ConfigError(f"{key} = {value!r} must be an integer")
    elif isinstance(value, str):
        _check_text(key, value)
    else:
        raise ConfigError(f"{key} = {value!r} must be a number, a string or true/false")


def _check_text(key: str, value: str) -> None:
    if "\x00" in value:
        raise ConfigError(f"{key} contains a NUL character")


def _range(key: str, value: float, low: float | None, high: float | None,
           open_low: bool = False) -> None:
    if low is not None and (value < low or (open_low and value == low)):
        raise ConfigError(f"{key} = {value!r} must be {'>' if open_low else '>='} {low}")
    if high is not None and value > high:
        raise ConfigError(f"{key} = {value!r} must be <= {high}")


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check a TOML value against a field type; ints are accepted where floats are expected."""
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"{key} = {value!r} must lie in [-{MAX_INT}, {MAX_INT}]")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if isinstance(value, int) and abs(value) > 2**53:
            raise ConfigError(f"{key} = {value!r} is too large")
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r} must be a finite number")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        _check_text(key, value)
        return value
    if typ is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return dict(value)
    if typ is list and not isinstance(value, list):
        raise ConfigError(f"{key} must be a list, got {value!r}")
    return value


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]!r}; known keys: {sorted(known)}")
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def from_dict(raw: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested mappings (a parsed TOML file)."""
    raw = dict(raw)
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        value = raw.pop(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        sections[name] = _build(cls, value, f"{name}.")
    top = _build(Config, {k: v for k, v in raw.items()}, "")
    return dataclasses.replace(top, **sections).validate()


def load(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load a TOML config file, apply ``section.key`` overrides, validate."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot read: {err.strerror or err}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path}: {len(data)} bytes is larger than "
                          f"{MAX_CONFIG_BYTES} (not a run configuration?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {err.start}): TOML "
                          "files must be UTF-8") from None
    return from_dict(_merge(parse_toml(text, str(path)), overrides or {}))


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """Parse TOML text; every failure (syntax, absurd nesting) is a ConfigError."""
    try:
        return tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where}: not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid TOML: nested too deeply") from None


def _merge(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {dotted}: {part} is not a table")
        node[parts[-1]] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value`` with a TOML value (bare words are read as strings)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"override {text!r}: {key!r} is not a section.key name")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        parsed = value
    return key, parsed


def describe_fields() -> str:
    """Every config field with its default and documentation, as TOML-like text."""
    lines = []
    top = Config()
    for f in dataclasses.fields(Config):
        if f.name not in _SECTIONS and f.name != "privacy":
            lines.append(f"{f.name} = {_show(getattr(top, f.name))}    # {f.metadata['doc']}")
    for name, cls in _SECTIONS.items():
        lines.append(f"\n[{name}]  # {cls.__doc__}")
        default = cls()
        for f in dataclasses.fields(cls):
            lines.append(f"{f.name} = {_show(getattr(default, f.name))}    # {f.metadata['doc']}")
    from ffm_private.privacy.config import describe_privacy_fields

    lines.append("\n" + describe_privacy_fields())
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def to_toml(config: Config) -> str:
    """Serialize a resolved config back to TOML (for the run directory).

    Written by ``tomli_w``, which escapes every string (backslashes and quotes in Windows
    paths, control characters), so :func:`load` reads back an equal config.
    """
    try:
        return tomli_w.dumps(config.to_dict())
    except (TypeError, ValueError) as err:
        raise ConfigError(f"the configuration cannot be written as TOML: {err}") from None
