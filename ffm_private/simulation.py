"""In-process federated simulation: every client on this machine, one round after another.

A run writes one directory::

    config.toml          the resolved configuration
    metrics.jsonl        one JSON line per round (evaluation metrics on evaluation rounds)
    checkpoints/         backbone.npz, and round-NNNN/ with global.npz, personal.npz, state.json
    summary.json / .md   best round chosen on validation HR, its test metrics, the guarantee

Every random choice derives from ``(seed, round, client)``, and a checkpoint is written
atomically after each round, so ``resume=True`` continues from the last completed round
and ends exactly where an uninterrupted run with the same seed ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffm_private import config as config_mod
from ffm_private import console
from ffm_private.callbacks import RoundCallback, RoundResult, default_callbacks
from ffm_private.client import ClientData, LocalTrainingConfig, train_client
from ffm_private.config import Config
from ffm_private.data import (
    LeaveOneOutSplit,
    SyntheticConfig,
    generate_synthetic,
    leave_one_out,
    load_dataset,
)
from ffm_private.data.synthetic import CONFIG_FILE as SYNTHETIC_SUMMARY
from ffm_private.data.synthetic import PERSONALITY_FILE
from ffm_private.defense.server import make_defense
from ffm_private.engine.batched import train_batched
from ffm_private.engine.threads import client_threads
from ffm_private.errors import (
    CheckpointError,
    CorruptFileError,
    NoRoundAppliedError,
    RunDirectoryError,
)
from ffm_private.evaluation import evaluate_popularity, evaluate_state
from ffm_private.models import (
    FROZEN,
    SHARED,
    Recommender,
    SharedSpec,
    build_model,
)
from ffm_private.models.partition import load_group, state_of
from ffm_private.observation import ObservationRecorder
from ffm_private.pretrain import pretrain_backbone, public_users
from ffm_private.privacy import fingerprint
from ffm_private.privacy.client_secrets import SecretStore
from ffm_private.privacy.run import NoPrivacy, RunPrivacy, Selection
from ffm_private.rundir import DATA_DIR, RunDir, install_tree, same_path
from ffm_private.server import Server, sample_clients
from ffm_private.storage import (
    PersonalStore,
    atomic_write_bytes,
    atomic_write_json,
    load_arrays,
    load_json,
    save_arrays,
)
from protocols import registry

CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
KEEP_CHECKPOINTS = 2
STATE_FILE = "state.json"


def _synthetic_preset(cfg: Config) -> SyntheticConfig:
    data = cfg.data
    return SyntheticConfig.preset(data.synthetic_preset, seed=cfg.federated.seed)


SYNTHETIC_FILES = ("u.data", "u.user", "u.item", PERSONALITY_FILE, SYNTHETIC_SUMMARY)


def synthetic_complete(path: Path) -> bool:
    """A generated dataset is complete once its summary file (written last) exists."""
    return (path / "u.data").is_file() and (path / SYNTHETIC_SUMMARY).is_file()


def _load_interactions(cfg: Config, synthetic_source: Path) -> Any:
    """The run's interactions, through the dataset registry (``data.kind``)."""
    data = cfg.data
    path = synthetic_source if data.kind == "synthetic" else data.path
    return load_dataset(data.kind, path, data)


def _split(cfg: Config, interactions: Any) -> LeaveOneOutSplit:
    return leave_one_out(interactions, num_eval_negatives=cfg.data.num_eval_negatives,
                         seed=cfg.federated.seed, protocol=cfg.data.protocol)


def load_split(cfg: Config, run_dir: Path) -> LeaveOneOutSplit:
    """Load (or, for synthetic data, generate once) the dataset and split it."""
    data = cfg.data
    path = Path(data.path) if data.path else Path(run_dir) / DATA_DIR
    if data.kind == "synthetic" and not synthetic_complete(path):
        generate_synthetic(path, _synthetic_preset(cfg))  # atomic: a temp dir, then renames
    return _split(cfg, _load_interactions(cfg, path))


def local_config(cfg: Config) -> LocalTrainingConfig:
    f = cfg.federated
    personal_epochs = f.personal_epochs if cfg.model.personalization else 0
    return LocalTrainingConfig(personal_epochs=personal_epochs, local_epochs=f.local_epochs,
                               personal_lr=f.personal_lr, lr=f.lr, batch_size=f.batch_size,
                               num_negatives=cfg.data.num_train_negatives)


def _flat_config(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = value

    walk("", cfg.to_dict())
    return out


#: Config fields that name files: compared as locations, not as strings.
PATH_FIELDS = ("run_dir", "data.path", "pretrain.checkpoint", "privacy.per_user_caps_file")


def config_differences(saved: Config, requested: Config) -> list[str]:
    """``field: saved != requested`` for every field that differs (paths compared resolved)."""
    a, b = _flat_config(saved), _flat_config(requested)
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if key == "run_dir":  # the saved config was found in the requested directory
            continue
        if (key in PATH_FIELDS and isinstance(x, str) and isinstance(y, str) and x and y
                and same_path(x, y)):
            continue
        if x != y:
            out.append(f"{key}: {x!r} in the run != {y!r} requested")
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


@dataclass
class RunState:
    """Everything a checkpoint restores."""

    round_id: int
    shared: dict[str, np.ndarray]
    personal: PersonalStore
    history: list[dict[str, Any]]
    #: The privacy fingerprint the checkpoint recorded (``None`` without DP or for old runs).
    privacy: dict[str, Any] | None = None


def read_checkpoint(ckpt: Path) -> tuple[RunState, dict[str, Any] | None]:
    """One checkpoint, verified against its checksums, and the mechanism state it recorded.

    Reads only; :class:`CorruptFileError` names the damaged file.
    """
    meta = load_json(ckpt / STATE_FILE)
    if not isinstance(meta, dict) or not isinstance(meta.get("round"), int) or \
            not isinstance(meta.get("history"), list):
        raise CorruptFileError(ckpt / STATE_FILE, "not a checkpoint state")
    files = meta.get("files")
    if "checksum" in meta:
        recorded = meta.pop("checksum")
        if _digest(meta) != recorded:
            raise CorruptFileError(ckpt / STATE_FILE, "checksum mismatch: altered")
    files = files if isinstance(files, dict) else {}
    shared = load_arrays(ckpt / "global.npz", files.get("global.npz"))
    personal = PersonalStore.load(ckpt / "personal.npz", files.get("personal.npz"))
    state = RunState(meta["round"], shared, personal, meta["history"], meta.get("privacy"))
    return state, meta.get("mechanism_state") or None


def _quiet(text: str) -> None:
    """Say nothing (the default for callers without progress output)."""


def latest_checkpoint(run_dir: Path, *, say: Callable[[str], None] = _quiet,
                      notes: list[str] | None = None
                      ) -> tuple[RunState, dict[str, Any] | None] | None:
    """The latest usable checkpoint; the previous one if the latest is damaged (said so).

    ``None`` when none was written; :class:`CheckpointError` naming every damaged file
    when checkpoints exist but none is usable. Reads only: the run and the read-only
    :class:`~ffm_private.run_view.RunView` share it.
    """
    root = Path(run_dir) / CHECKPOINTS
    latest = root / LATEST
    dirs = sorted((p for p in root.glob("round-*") if p.is_dir()), reverse=True)
    named = None
    if latest.exists():
        try:
            text = latest.read_bytes().decode("ascii").strip()
        except UnicodeDecodeError:
            text = ""
        if text.startswith("round-") and (root / text).is_dir():
            named = root / text
        else:
            say(f"{latest} is damaged ({text[:20]!r}); looking for the newest "
                "usable checkpoint")
    # a directory without state.json is a checkpoint a crash interrupted: never complete
    others = [d for d in dirs if d != named and (d / STATE_FILE).exists()]
    if named is None and not others:
        if latest.exists():
            raise CheckpointError(f"{latest} names no checkpoint and none is left")
        return None
    order = ([named] if named else []) + others
    problems = []
    for ckpt in order:
        try:
            found = read_checkpoint(ckpt)
        except CorruptFileError as err:
            problems.append(str(err))
            continue
        if problems and named is not None:
            say(f"checkpoint {named.name} is unusable ({problems[0]}); "
                f"resuming from {ckpt.name} instead")
            if notes is not None:
                notes.append(f"fell back to checkpoint {ckpt.name}: {problems[0]}")
        return found
    raise CheckpointError("no usable checkpoint in " + str(root) + ": " + "; ".join(problems))


class Simulation:
    """Drives a whole run: data, pretraining, rounds, evaluation, checkpoints, summary.

    Built in two steps. The constructor checks the configuration, the run directory and the
    privacy plan in memory and writes nothing, so a refused configuration leaves the directory
    as it was (``--overwrite`` included). :meth:`start` claims the directory and writes: the
    config, the plan, the ledger, the secrets, the data and the backbone. :meth:`run` starts if
    needed and plays the rounds; the loop's concerns are :mod:`ffm_private.callbacks`
    (``callbacks`` adds to the defaults, after them).
    """

    def __init__(self, cfg: Config, *, resume: bool = False, overwrite: bool = False,
                 progress: bool = True, callbacks: Sequence[RoundCallback] = ()) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.progress = progress
        self.directory = RunDir(self.run_dir)
        self.privacy: RunPrivacy | NoPrivacy = NoPrivacy(cfg.protocol.name)
        self.defense = None
        self.callbacks: list[RoundCallback] = [*default_callbacks(), *callbacks]
        self._staging: Path | None = None
        self._resume_state: RunState | None = None
        self._overwrite = overwrite
        self.started = False
        self.notes: list[str] = []
        try:
            self._resuming = self._check(resume, overwrite)
        except BaseException:
            self.close()
            raise

    # -- set-up ---------------------------------------------------------------------------
    def _check(self, resume: bool, overwrite: bool) -> bool:
        """Everything that can refuse the configuration, in memory; return whether resuming."""
        cfg = self.cfg
        resuming = self._check_directory(resume, overwrite)
        torch.manual_seed(cfg.federated.seed)
        self.split = self._prepare_split(fresh=overwrite and not resuming)
        self.local_cfg = local_config(cfg)
        self.public = public_users(self.split.n_users, cfg.data.public_fraction,
                                   cfg.federated.seed)
        probe = build_model(cfg.model, self.split.n_items)
        from ffm_private.run_view import prepare_privacy  # the one place the plan is derived

        self.privacy = (prepare_privacy(cfg, self.run_dir, self.split, self.local_cfg,
                                        resume=resuming) or NoPrivacy(cfg.protocol.name))
        if self.privacy.example_dp is not None:
            self.local_cfg = dataclasses.replace(self.local_cfg,
                                                 example_dp=self.privacy.example_dp)
        statistics = registry.protocol_class(cfg.protocol.name).private_statistics_option
        options = self.privacy.protocol_options(cfg.protocol.options, statistics)
        try:
            self.protocol = registry.create(cfg.protocol.name, options)
        except (ValueError, TypeError, OverflowError) as err:  # the protocol reads its options
            raise config_mod.ConfigError(f"[protocol] {err}") from err
        self.privacy.bind_protocol(self.protocol, SharedSpec.of(probe).size)
        self._check_protocol_fits()
        self.defense = make_defense(cfg.defense, self.run_dir, self.public,
                                    self._attributes, SharedSpec.of(probe).size)
        self._given = self._given_backbone()
        if self._given is None and not (resuming and self._backbone_path().exists()):
            self._check_public_users()
        self.secrets = SecretStore(self.run_dir, test_seed=self.privacy.test_seed)
        if resuming:
            self._check_resume()
        return resuming

    def _check_resume(self) -> None:
        """Refuse, reading only, to resume over a lost or altered ledger, log or secret."""
        self._resume_state = self._read_checkpoint()
        self.privacy.check_resume(self.secrets)
        if self._resume_state is not None:
            self._verify_privacy_state(self._resume_state)
            self.privacy.check_secrets(self.secrets, self._resume_state.privacy or {})

    def start(self) -> Simulation:
        """Claim the run directory and write what the run needs; idempotent; returns ``self``."""
        if self.started:
            return self
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        self.started = True
        return self

    def _start(self) -> None:
        cfg, resuming = self.cfg, self._resuming
        # -- claim: marker first, then the lock; only now is anything written ---------------
        self.directory.claim()
        if self._overwrite and not resuming:
            left = self.directory.clear()
            if left:
                self._say(f"--overwrite kept {len(left)} entr{'y' if len(left) == 1 else 'ies'} "
                          f"it did not create in {self.run_dir}: {', '.join(left[:5])}")
        self._install_data()
        atomic_write_bytes(self.run_dir / "config.toml", config_mod.to_toml(cfg).encode())
        self.privacy.start(self.secrets, resuming=resuming)
        self.backbone = self._given if self._given is not None else self._backbone()
        self.workspace = self._model(1)
        self.spec = SharedSpec.of(self.workspace)
        self.observer = ObservationRecorder(
            self.run_dir, cfg.observation, self.spec, protocol=cfg.protocol.name,
            reveals_individual=self.protocol.reveals_individual_updates,
            total_rounds=cfg.federated.rounds, seed=cfg.federated.seed,
            extra={"model": cfg.model.kind, "n_users": self.split.n_users})

    def __enter__(self) -> Simulation:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the run lock and the ledger; drop staged data (idempotent)."""
        self.privacy.close()
        self.directory.unlock()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def _check_directory(self, resume: bool, overwrite: bool) -> bool:
        """Refuse to mix runs; return whether an existing run is being resumed (no writes)."""
        d = self.directory
        d.check_usable()
        config_path = self.run_dir / "config.toml"
        if d.holds_run():
            if resume:
                d.lock()
                saved = config_mod.load(config_path)
                diffs = config_differences(saved, self.cfg)
                if diffs:
                    raise RunDirectoryError(
                        f"{config_path} differs from the requested config in "
                        f"{len(diffs)} field(s): {'; '.join(diffs[:6])}. Resume only with the "
                        "run's own config (see config.toml in the run directory)")
                return True
            if not overwrite:
                raise RunDirectoryError(
                    f"{self.run_dir} already holds a run; pass --resume to continue it, "
                    "--overwrite to replace it, or choose another run_dir")
            d.check_overwrite()
            return False
        if resume:
            if (self.run_dir / CHECKPOINTS).exists():
                raise RunDirectoryError(f"{self.run_dir} has checkpoints but no config.toml")
            if not d.is_claimed():
                raise RunDirectoryError(
                    f"--resume: {self.run_dir} holds no run to resume (no config.toml); "
                    "run without --resume to start one")
            d.lock()  # claimed by a run that stopped before writing its config: start it
        return False

    def _prepare_split(self, fresh: bool) -> LeaveOneOutSplit:
        """The split; synthetic data is generated into a staging directory, installed later."""
        cfg = self.cfg
        source = Path(cfg.data.path) if cfg.data.path else self.run_dir / DATA_DIR
        self._data_target: Path | None = None
        fresh = fresh and not cfg.data.path  # a user-given data.path is never regenerated
        if cfg.data.kind == "synthetic" and (fresh or not synthetic_complete(source)):
            self._staging = Path(tempfile.mkdtemp(prefix="ffm-private-data-"))
            staged = self._staging / DATA_DIR
            generate_synthetic(staged, _synthetic_preset(cfg))
            self._data_target, source = Path(cfg.data.path or self.run_dir / DATA_DIR), staged
        interactions = _load_interactions(cfg, source)
        split = _split(cfg, interactions)
        rows = split.source_users if split.source_users is not None else np.arange(split.n_users)
        # every user's attributes; only the defense reads them, and keeps the public rows only
        self._attributes = {k: np.asarray(v)[rows]
                            for k, v in interactions.user_attributes.items()}
        return split

    def _install_data(self) -> None:
        """Put staged synthetic data in place: complete or absent, whatever a crash hits."""
        if self._staging is None or self._data_target is None:
            return
        target, staged = self._data_target, self._staging / DATA_DIR
        if same_path(target, self.run_dir / DATA_DIR):
            if target.exists():  # left half-written by a run killed while generating
                foreign = sorted({p.name for p in target.iterdir()} - set(SYNTHETIC_FILES))
                if foreign:
                    raise RunDirectoryError(f"{target} holds files the generator did not "
                                            f"write ({', '.join(foreign[:5])}); move them away")
                shutil.rmtree(target)
            install_tree(staged, target)
        elif not synthetic_complete(target):
            generate_synthetic(target, _synthetic_preset(self.cfg))  # writes only its own files
        shutil.rmtree(self._staging, ignore_errors=True)
        self._staging = None

    def _backbone_path(self) -> Path:
        return self.run_dir / CHECKPOINTS / "backbone.npz"

    def _given_backbone(self) -> dict[str, np.ndarray] | None:
        """``pretrain.checkpoint``, loaded and fitted to the model now (before any write)."""
        path = self.cfg.pretrain.checkpoint
        if not path:
            return None
        try:
            state = load_arrays(path)
            self.backbone = state
            self._model(1)
        except CorruptFileError as err:
            raise config_mod.ConfigError(f"pretrain.checkpoint = {path!r}: {err}") from None
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            raise config_mod.ConfigError(
                f"pretrain.checkpoint = {path!r} does not fit model {self.cfg.model.kind!r} "
                f"(dim, history_length, items): {err}") from None
        return state

    def _check_public_users(self) -> None:
        users = public_users(self.split.n_users, self.cfg.data.public_fraction,
                             self.cfg.federated.seed)
        if len(users) == 0:
            raise config_mod.ConfigError(
                f"data.public_fraction = {self.cfg.data.public_fraction!r} selects no public "
                f"user of {self.split.n_users}: pretraining needs at least one (or set "
                "pretrain.checkpoint)")

    def _check_protocol_fits(self) -> None:
        """Refuse protocol counts no round can meet: every round would abort."""
        n = self.split.n_users
        opts = getattr(self.protocol, "options", None)
        for owner in (self.protocol, opts):
            for name in ("min_clients", "threshold"):
                value = getattr(owner, name, None) if owner is not None else None
                if isinstance(value, int) and not isinstance(value, bool) and value > n:
                    raise config_mod.ConfigError(
                        f"protocol.options.{name} = {value} exceeds the {n} clients of the "
                        "dataset: every round would abort")

    def user_ids(self) -> list[str]:
        """The dataset's id of each client (internal index -> id in the source files)."""
        from ffm_private.run_view import user_ids

        return user_ids(self.split)

    def _model(self, num_personal: int) -> Recommender:
        model = build_model(self.cfg.model, self.split.n_items, num_personal)
        load_group(model, FROZEN, self.backbone)
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def _backbone(self) -> dict[str, np.ndarray]:
        path = self._backbone_path()
        if path.exists():
            try:
                return load_arrays(path)
            except CorruptFileError as err:  # derived data: pretraining again is exact
                self._say(f"{err}; pretraining the backbone again")
        users = public_users(self.split.n_users, self.cfg.data.public_fraction,
                             self.cfg.federated.seed)
        state = pretrain_backbone(self.cfg.model, self.cfg.pretrain, self.split, users,
                                  num_negatives=self.cfg.data.num_train_negatives,
                                  seed=self.cfg.federated.seed, progress=self.progress)
        save_arrays(path, state)
        return state

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, state: RunState) -> None:
        """Write round-NNNN/ (arrays, then state.json with their checksums), then LATEST."""
        ckpt = self.run_dir / CHECKPOINTS / f"round-{state.round_id:04d}"
        ckpt.mkdir(parents=True, exist_ok=True)
        files = {"global.npz": save_arrays(ckpt / "global.npz", state.shared),
                 "personal.npz": state.personal.save(ckpt / "personal.npz")}
        meta: dict[str, Any] = {"round": state.round_id, "history": state.history,
                                "files": files, "privacy": self._privacy_fingerprint(state),
                                **self.privacy.mechanism_checkpoint()}
        meta["checksum"] = _digest(meta)
        atomic_write_json(ckpt / STATE_FILE, meta)
        atomic_write_bytes(self.run_dir / CHECKPOINTS / LATEST, ckpt.name.encode())
        rounds = sorted(self.run_dir.glob(f"{CHECKPOINTS}/round-*"))
        for old in rounds[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)

    def _privacy_fingerprint(self, state: RunState) -> dict[str, Any]:
        """What the privacy state must be at this checkpoint (see privacy/fingerprint.py)."""
        return {"observations": fingerprint.observation_fingerprint(
            self.run_dir / "observations", state.round_id),
            **self.privacy.fingerprints(state.round_id)}

    def load_checkpoint(self) -> RunState | None:
        """The latest usable checkpoint (see :func:`latest_checkpoint`), its mechanism restored."""
        self._require_started()
        if self._resume_state is not None:
            return self._resume_state
        return self._read_checkpoint()

    def _read_checkpoint(self) -> RunState | None:
        found = latest_checkpoint(self.run_dir, say=self._say, notes=self.notes)
        if found is None:
            return None
        state, mechanism_state = found
        if mechanism_state:
            self.privacy.mechanism.load_state(mechanism_state)
        return state

    def _verify_privacy_state(self, state: RunState) -> None:
        """Refuse to resume over a lost or altered ledger or observation log.

        (Lost or changed secrets: ``RunPrivacy.check_secrets`` and ``check_resume``.)
        """
        recorded = state.privacy or {}
        fingerprint.check_observations(self.run_dir / "observations", state.round_id,
                                       recorded.get("observations", []))
        self.privacy.check_checkpoint(recorded, state.round_id)

    def _require_started(self) -> None:
        if not self.started:
            raise RuntimeError("Simulation.start() has not been called (run() calls it)")

    # -- the loop -----------------------------------------------------------------------------
    def evaluate(self, state: RunState) -> dict[str, float]:
        return evaluate_state(self._model(self.split.n_users), self.split, self.cfg, state)

    def initial_state(self) -> RunState:
        self._require_started()
        torch.manual_seed(self.cfg.federated.seed)
        init = build_model(self.cfg.model, self.split.n_items, 1)
        personal = init.init_personal_states(self.split.n_users, self.cfg.federated.seed)
        return RunState(0, state_of(init, SHARED), PersonalStore(personal), [])

    def run_round(self, state: RunState, round_id: int) -> RoundResult:
        """Play one round on ``state`` (updated in place); the loop's callbacks do the rest."""
        self._require_started()
        with client_threads(self.cfg.federated.client_threads):
            return self._run_round(state, round_id)

    def _select(self, round_id: int) -> Selection:
        """Who takes part: the privacy's budget check, then the round's public sample."""
        f = self.cfg.federated

        def sample(pool: Sequence[int]) -> list[int]:
            return [pool[i] for i in sample_clients(len(pool), f.client_fraction, round_id, f.seed)]

        return self.privacy.select(round_id, list(range(self.split.n_users)), sample)

    def _run_round(self, state: RunState, round_id: int) -> RoundResult:
        f = self.cfg.federated
        selection = self._select(round_id)
        sampled, declined = selection.sampled, list(selection.declined)
        server = Server(self.spec, state.shared, self.protocol, f.server_lr,
                        averager=self.privacy.averager(selection.pool_size, self.spec.size))
        message = server.broadcast(round_id)
        if self.defense is not None:  # the public basis travels with the broadcast
            message = self.defense.attach(message, lambda m, u: self._public_update(state, m, u))
        updates, losses = {}, []
        bar = console.bar(sampled, enabled=self.progress, desc=f"round {round_id}/{f.rounds}",
                          leave=False, unit="client")
        trained = (train_batched(self.workspace, message, state.personal.get,
                                 [self._client_data(cid) for cid in sampled], self.local_cfg,
                                 f.seed, memory_budget_mb=f.memory_budget_mb)
                   if f.engine == "batched" else None)
        for cid in bar:
            result = (trained.pop(cid) if trained is not None else
                      train_client(self.workspace, message, state.personal.get(cid),
                                   self._client_data(cid), self.local_cfg, f.seed,
                                   generator=self.privacy.client_generator(round_id, cid)))
            losses.append(result.metrics["shared_loss"])
            update = self.privacy.protect(round_id, cid, result.update, result.dp)
            if update is None:  # declined: nothing leaves, the personal state is discarded
                declined.append(cid)
                continue
            state.personal.put(cid, result.personal)
            updates[cid] = update
        # each client keys its protocol randomness (stochastic rounding) from its own secret
        secrets = (None if self.protocol.reveals_individual_updates
                   else self.secrets.protocol_secrets(round_id, sorted(updates)))
        outcome = server.aggregate(round_id, updates, seed=f.seed, secrets=secrets,
                                   encoding=self.privacy.mechanism.encoding)
        state.shared = server.shared
        state.round_id = round_id
        return RoundResult(round_id, self._round_row(round_id, sampled, outcome, losses, declined),
                           message.shared, sampled, outcome)

    def _round_row(self, round_id: int, sampled: list[int], outcome: Any, losses: list[float],
                   declined: list[int], *, dropped: int | None = None,
                   rejected: int | None = None) -> dict[str, Any]:
        """The round's line of ``metrics.jsonl`` (every engine and placement writes this one)."""
        row = {
            "round": round_id,
            "sampled": len(sampled),
            "contributors": len(outcome.contributors),
            "dropped": len(outcome.dropped) if dropped is None else dropped,
            "rejected": len(outcome.rejected) if rejected is None else rejected,
            "aborted": outcome.aborted,
            "noise_only": outcome.noise_only,
            "train_loss": float(np.nanmean(losses)) if losses else float("nan"),
            "update_norm": outcome.update_norm,
            "bytes_up": outcome.bytes_up,
        }
        row.update(self.privacy.round_fields(round_id, declined))
        return row

    def _client_data(self, cid: int) -> ClientData:
        return ClientData(cid, self.split.train[cid], self.split.negative_exclusions(cid))

    def _public_update(self, state: RunState, message: Any, user: int) -> np.ndarray:
        """What public user ``user`` would send from ``message`` (its data is public: no DP)."""
        result = train_client(self.workspace, message, state.personal.get(user),
                              ClientData(user, self.split.train[user],
                                         self.split.negative_exclusions(user)),
                              dataclasses.replace(self.local_cfg, example_dp=None),
                              self.cfg.federated.seed)
        return result.update.delta

    def run(self) -> dict[str, Any]:
        """Run (or resume) to the configured number of rounds; return the summary."""
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> dict[str, Any]:
        """The loop: play each round, then hand it to the callbacks (see :mod:`.callbacks`)."""
        self.start()
        state = self.load_checkpoint() or self.initial_state()
        for callback in self.callbacks:
            callback.on_start(self, state)
        for round_id in range(state.round_id + 1, self.cfg.federated.rounds + 1):
            for callback in self.callbacks:
                callback.before_round(self, state, round_id)
            result = self.run_round(state, round_id)
            state.history.append(result.row)
            for callback in self.callbacks:
                callback.after_round(self, state, result)
        for callback in self.callbacks:
            callback.on_end(self, state)
        summary = self.write_summary(state)
        if summary["rounds_applied"] == 0:
            raise NoRoundAppliedError(
                f"every one of the {state.round_id} rounds aborted "
                f"({summary['abort_reasons'][0] if summary['abort_reasons'] else '?'}): "
                f"the model in {self.run_dir} was never trained; see summary.md")
        return summary

    # -- reporting ----------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        console.say(text, enabled=self.progress)

    def _line(self, row: dict[str, Any]) -> str:
        k = self.cfg.evaluation.k
        return (f"round {row['round']:>3}/{self.cfg.federated.rounds}  "
                f"valid HR@{k} {row[f'valid_hr@{k}']:.4f} NDCG@{k} {row[f'valid_ndcg@{k}']:.4f}  "
                f"| test HR@{k} {row[f'test_hr@{k}']:.4f} NDCG@{k} {row[f'test_ndcg@{k}']:.4f}  "
                f"| loss {row['train_loss']:.4f}"
                + (f" | epsilon {row['epsilon']:.3f}" if "epsilon" in row else ""))

    def write_summary(self, state: RunState) -> dict[str, Any]:
        k = self.cfg.evaluation.k
        evaluated = [r for r in state.history if f"valid_hr@{k}" in r]
        best = max(evaluated, key=lambda r: (r[f"valid_hr@{k}"], -r["round"]))
        aborted = [r for r in state.history if r.get("aborted")]
        reasons = sorted({str(r["aborted"]) for r in aborted})
        summary = {
            "run_dir": str(self.run_dir),
            "dataset": {"kind": self.cfg.data.kind, "users": self.split.n_users,
                        "items": self.split.n_items,
                        "protocol": self.cfg.data.protocol},
            "model": self.cfg.model.kind,
            "rounds": state.round_id,
            "rounds_applied": len(state.history) - len(aborted),
            "aborted_rounds": [r["round"] for r in aborted],
            "abort_reasons": reasons,
            "selected_round": best["round"],
            "selection": f"round with the highest validation HR@{k}",
            "selected_metrics": {key: v for key, v in best.items()
                                 if key.startswith(("valid_", "test_"))},
            "last_round_metrics": {key: v for key, v in evaluated[-1].items()
                                   if key.startswith(("valid_", "test_"))},
            "popularity_baseline": evaluate_popularity(self.split, k=k),
            "shared_parameters": self.spec.size,
            "protocol": self.protocol.describe(),
            "privacy": self.privacy.statement(state.round_id, with_ledger=True),
            "privacy_details": self.privacy.report(state.round_id),
            "seconds_per_round": float(np.mean([r["seconds"] for r in state.history])),
            "notes": list(self.notes),
        }
        atomic_write_json(self.run_dir / "summary.json", summary)
        atomic_write_bytes(self.run_dir / "summary.md", render_summary(summary, k).encode())
        return summary


def render_summary(summary: dict[str, Any], k: int) -> str:
    sel, pop = summary["selected_metrics"], summary["popularity_baseline"]
    lines = [
        f"# Run summary: {summary['run_dir']}",
        "",
        f"- data: {summary['dataset']['kind']} ({summary['dataset']['users']} users, "
        f"{summary['dataset']['items']} items; evaluation protocol "
        f"{summary['dataset'].get('protocol', 'pfedrec')}); model: {summary['model']} "
        f"({summary['shared_parameters']} shared parameters)",
        f"- rounds: {summary['rounds']}; selected round {summary['selected_round']} "
        f"({summary['selection']})",
        *_abort_lines(summary),
        f"- protocol: {summary['protocol']}",
        f"- privacy: {summary['privacy']}",
        "",
        "| metric | selected round | popularity |",
        "|---|---|---|",
    ]
    for key in (f"test_hr@{k}", f"test_ndcg@{k}", f"valid_hr@{k}", f"valid_ndcg@{k}",
                f"test_full_hr@{k}", f"test_full_ndcg@{k}"):
        if key in sel:
            p = f"{pop[key]:.4f}" if key in pop else "-"
            lines.append(f"| {key} | {sel[key]:.4f} | {p} |")
    return "\n".join(lines) + "\n"


def _abort_lines(summary: dict[str, Any]) -> list[str]:
    aborted = summary.get("aborted_rounds") or []
    lines = []
    if aborted:
        shown = ", ".join(map(str, aborted[:10])) + (", ..." if len(aborted) > 10 else "")
        lines.append(f"- **aborted rounds: {len(aborted)} of {summary['rounds']}** ({shown}); "
                     f"applied: {summary.get('rounds_applied', '?')}; reasons: "
                     + "; ".join(summary.get("abort_reasons", [])[:3]))
    lines += [f"- note: {n}" for n in summary.get("notes", [])]
    return lines


def run_training(cfg: Config, *, resume: bool = False, overwrite: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Train a federated recommender as ``cfg`` describes; return the summary."""
    return Simulation(cfg, resume=resume, overwrite=overwrite, progress=progress).run()
