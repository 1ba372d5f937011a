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
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ffm_private import config as config_mod
from ffm_private.client import ClientData, LocalTrainingConfig, train_client
from ffm_private.config import Config
from ffm_private.data import (
    LeaveOneOutSplit,
    SyntheticConfig,
    generate_synthetic,
    leave_one_out,
    load_dataset,
)
from ffm_private.evaluation import evaluate_model, evaluate_popularity
from ffm_private.models import (
    FROZEN,
    PERSONAL,
    SHARED,
    Recommender,
    SharedSpec,
    build_model,
    params_of,
)
from ffm_private.models.partition import load_group, state_of
from ffm_private.observation import ObservationRecorder
from ffm_private.pretrain import pretrain_backbone, public_users
from ffm_private.privacy.guarantee import NO_DP
from ffm_private.privacy.run import RunPrivacy
from ffm_private.server import Averager, Server, plain_mean, sample_clients
from ffm_private.storage import (
    PersonalStore,
    atomic_write_bytes,
    atomic_write_json,
    load_arrays,
    save_arrays,
)
from protocols import AggregateResult, registry

CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
KEEP_CHECKPOINTS = 2


class RunDirectoryError(RuntimeError):
    """The run directory is in a state that would lose or mix up results."""


def load_split(cfg: Config, run_dir: Path) -> LeaveOneOutSplit:
    """Load (or, for synthetic data, generate once) the dataset and split it."""
    data = cfg.data
    if data.kind == "synthetic":
        path = Path(data.path) if data.path else run_dir / "data"
        if not (path / "u.data").exists():
            preset = SyntheticConfig.small() if data.synthetic_preset == "small" else SyntheticConfig()
            preset = SyntheticConfig(**{**preset.__dict__, "seed": cfg.federated.seed})
            generate_synthetic(path, preset)
        interactions = load_dataset("synthetic", path)
    elif data.kind == "csv":
        from ffm_private.data import load_csv

        interactions = load_csv(data.path, user_col=data.csv_user_col, item_col=data.csv_item_col,
                                timestamp_col=data.csv_timestamp_col, delimiter=data.csv_delimiter)
    else:
        interactions = load_dataset(data.kind, data.path)
    return leave_one_out(interactions, num_eval_negatives=data.num_eval_negatives,
                         seed=cfg.federated.seed, protocol=data.protocol)


def local_config(cfg: Config) -> LocalTrainingConfig:
    f = cfg.federated
    personal_epochs = f.personal_epochs if cfg.model.personalization else 0
    return LocalTrainingConfig(personal_epochs=personal_epochs, local_epochs=f.local_epochs,
                               personal_lr=f.personal_lr, lr=f.lr, batch_size=f.batch_size,
                               num_negatives=cfg.data.num_train_negatives)


@dataclass
class RunState:
    """Everything a checkpoint restores."""

    round_id: int
    shared: dict[str, np.ndarray]
    personal: PersonalStore
    history: list[dict[str, Any]]


class Simulation:
    """Drives a whole run: data, pretraining, rounds, evaluation, checkpoints, summary."""

    def __init__(self, cfg: Config, *, resume: bool = False, overwrite: bool = False,
                 progress: bool = True) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.progress = progress
        resuming = self._check_directory(resume, overwrite)
        torch.manual_seed(cfg.federated.seed)
        self.split = load_split(cfg, self.run_dir)
        # Everything that can refuse the configuration runs before the directory is claimed.
        self.local_cfg = local_config(cfg)
        self.public = public_users(self.split.n_users, cfg.data.public_fraction,
                                   cfg.federated.seed)
        probe = build_model(cfg.model, self.split.n_items)
        self.privacy = RunPrivacy.prepare(
            cfg.privacy, self.run_dir, user_ids=self.user_ids(), rounds=cfg.federated.rounds,
            client_fraction=cfg.federated.client_fraction, protocol=cfg.protocol.name,
            resume=resuming, train_sizes=[len(t) for t in self.split.train],
            local_cfg=self.local_cfg, has_personal=bool(params_of(probe, PERSONAL)),
            public=self.public)
        if self.privacy is not None and self.privacy.example_dp is not None:
            self.local_cfg = dataclasses.replace(self.local_cfg,
                                                 example_dp=self.privacy.example_dp)
        try:
            self.protocol = registry.create(cfg.protocol.name, self._protocol_options())
        except ValueError as err:  # options are checked by the protocol that reads them
            raise config_mod.ConfigError(f"[protocol] {err}") from err
        if self.privacy is not None:
            self.privacy.bind_protocol(self.protocol, SharedSpec.of(probe).size)
        atomic_write_bytes(self.run_dir / "config.toml", config_mod.to_toml(cfg).encode())
        if self.privacy is not None:
            self.privacy.start(resuming=resuming)
        self.backbone = self._backbone()
        self.workspace = self._model(1)
        self.spec = SharedSpec.of(self.workspace)
        self.observer = ObservationRecorder(
            self.run_dir, cfg.observation, self.spec, protocol=cfg.protocol.name,
            reveals_individual=self.protocol.reveals_individual_updates,
            total_rounds=cfg.federated.rounds, seed=cfg.federated.seed,
            extra={"model": cfg.model.kind, "n_users": self.split.n_users})

    # -- set-up ---------------------------------------------------------------------------
    def _check_directory(self, resume: bool, overwrite: bool) -> bool:
        """Refuse to mix runs; return whether an existing run is being resumed."""
        config_path = self.run_dir / "config.toml"
        if config_path.exists():
            if resume:
                saved = config_mod.load(config_path)
                if saved != self.cfg:
                    raise RunDirectoryError(
                        f"{config_path} differs from the requested config; resume only with "
                        "the run's own config (see config.toml in the run directory)")
                return True
            if not overwrite:
                raise RunDirectoryError(
                    f"{self.run_dir} already holds a run; pass --resume to continue it, "
                    "--overwrite to replace it, or choose another run_dir")
            shutil.rmtree(self.run_dir)
        elif resume and (self.run_dir / CHECKPOINTS).exists():
            raise RunDirectoryError(f"{self.run_dir} has checkpoints but no config.toml")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return False

    def user_ids(self) -> list[str]:
        """The dataset's id of each client (internal index -> id in the source files)."""
        raw = self.split.raw_user_ids
        return [str(u) for u in (raw if raw is not None else range(self.split.n_users))]

    def _protocol_options(self) -> dict[str, Any]:
        """Protocol options; distributed DP noise needs the protocol to abort below m shares.

        The check must happen inside the protocol: once a secure protocol unmasks or decrypts
        a sum with too few noise shares, discarding it afterwards is too late.
        """
        options = dict(self.cfg.protocol.options)
        if (self.privacy is not None and self.privacy.plan.noise_placement == "distributed"
                and self.cfg.protocol.name == "secagg"):
            # the untrusted server must not learn an un-noised statistic of the updates
            options.setdefault("report_clipped", False)
        if self.privacy is not None and self.privacy.plan.noise_placement == "distributed":
            m = self.privacy.cfg.min_survivors
            if options.setdefault("min_clients", m) < m:
                raise config_mod.ConfigError(
                    f"protocol.options.min_clients = {options['min_clients']} is below "
                    f"privacy.min_survivors = {m}: the protocol would reveal sums with fewer "
                    "noise shares than the guarantee needs")
        return options

    def _model(self, num_personal: int) -> Recommender:
        model = build_model(self.cfg.model, self.split.n_items, num_personal)
        load_group(model, FROZEN, self.backbone)
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def _backbone(self) -> dict[str, np.ndarray]:
        path = self.run_dir / CHECKPOINTS / "backbone.npz"
        if self.cfg.pretrain.checkpoint:
            return load_arrays(self.cfg.pretrain.checkpoint)
        if path.exists():
            return load_arrays(path)
        users = public_users(self.split.n_users, self.cfg.data.public_fraction,
                             self.cfg.federated.seed)
        state = pretrain_backbone(self.cfg.model, self.cfg.pretrain, self.split, users,
                                  num_negatives=self.cfg.data.num_train_negatives,
                                  seed=self.cfg.federated.seed, progress=self.progress)
        save_arrays(path, state)
        return state

    def initial_state(self) -> RunState:
        torch.manual_seed(self.cfg.federated.seed)
        init = build_model(self.cfg.model, self.split.n_items, 1)
        personal = init.init_personal_states(self.split.n_users, self.cfg.federated.seed)
        return RunState(0, state_of(init, SHARED), PersonalStore(personal), [])

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, state: RunState) -> None:
        ckpt = self.run_dir / CHECKPOINTS / f"round-{state.round_id:04d}"
        ckpt.mkdir(parents=True, exist_ok=True)
        save_arrays(ckpt / "global.npz", state.shared)
        state.personal.save(ckpt / "personal.npz")
        atomic_write_json(ckpt / "state.json", {"round": state.round_id, "history": state.history})
        atomic_write_bytes(self.run_dir / CHECKPOINTS / LATEST, ckpt.name.encode())
        rounds = sorted(self.run_dir.glob(f"{CHECKPOINTS}/round-*"))
        for old in rounds[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self) -> RunState | None:
        latest = self.run_dir / CHECKPOINTS / LATEST
        if not latest.exists():
            return None
        ckpt = self.run_dir / CHECKPOINTS / latest.read_text().strip()
        meta = json.loads((ckpt / "state.json").read_text())
        return RunState(meta["round"], load_arrays(ckpt / "global.npz"),
                        PersonalStore.load(ckpt / "personal.npz"), meta["history"])

    # -- the loop -----------------------------------------------------------------------------
    def evaluate(self, state: RunState) -> dict[str, float]:
        model = self._model(self.split.n_users)
        load_group(model, SHARED, state.shared)
        load_group(model, PERSONAL, state.personal.arrays)
        return evaluate_model(model, self.split, k=self.cfg.evaluation.k,
                              full_ranking=self.cfg.evaluation.full_ranking)

    def run_round(self, state: RunState, round_id: int) -> dict[str, Any]:
        f = self.cfg.federated
        users = list(range(self.split.n_users))

        def sample(pool: list[int]) -> list[int]:
            return [pool[i] for i in sample_clients(len(pool), f.client_fraction, round_id, f.seed)]

        if self.privacy is None:
            sampled, declined, pool_size = sample(users), [], len(users)
        else:
            selection = self.privacy.select(round_id, users, sample)
            sampled, declined, pool_size = (selection.sampled, selection.declined,
                                            selection.pool_size)
        server = Server(self.spec, state.shared, self.protocol, f.server_lr,
                        averager=self._averager(pool_size))
        message = server.broadcast(round_id)
        updates, losses = {}, []
        bar = tqdm(sampled, desc=f"round {round_id}/{f.rounds}", disable=not self.progress,
                   leave=False, unit="client")
        for cid in bar:
            generator = self.privacy.client_generator(round_id, cid) if self.privacy else None
            result = train_client(self.workspace, message, state.personal.get(cid),
                                  ClientData(cid, self.split.train[cid],
                                             self.split.negative_exclusions(cid)),
                                  self.local_cfg, f.seed,
                                  generator=generator)
            losses.append(result.metrics["shared_loss"])
            update = result.update
            if self.privacy is not None:
                released = self.privacy.release(round_id, cid, update.delta, result.dp)
                if released is None:  # declined: nothing leaves, the personal state is discarded
                    declined.append(cid)
                    continue
                # only the protected vector leaves: no example count, no losses
                update = dataclasses.replace(update, delta=released, num_examples=0, metrics={})
            state.personal.put(cid, result.personal)
            updates[cid] = update
        secrets = (self.privacy.protocol_secrets(round_id, sorted(updates))
                   if self.privacy is not None else None)
        outcome = server.aggregate(round_id, updates, seed=f.seed, secrets=secrets)
        state.shared = server.shared
        self.observer.record(round_id, message.shared, sampled, outcome, state.shared)
        state.round_id = round_id
        row = {
            "round": round_id,
            "sampled": len(sampled),
            "contributors": len(outcome.contributors),
            "dropped": len(outcome.dropped),
            "rejected": len(outcome.rejected),
            "aborted": outcome.aborted,
            "noise_only": outcome.noise_only,
            "train_loss": float(np.nanmean(losses)) if losses else float("nan"),
            "update_norm": outcome.update_norm,
            "bytes_up": outcome.bytes_up,
        }
        if self.privacy is not None:
            row["declined"] = len(declined)
            row["epsilon"] = self.privacy.epsilon_after_rounds(round_id)
        return row

    def _averager(self, pool_size: int) -> Averager:
        """The server step of the run's mechanism (the null mechanism without DP)."""
        if self.privacy is None:
            return plain_mean
        privacy, dim = self.privacy, self.spec.size

        def dp_mean(round_id: int, result: AggregateResult | None) -> np.ndarray:
            total = None if result is None else result.total
            contributors = 0 if result is None else len(result.contributors)
            return privacy.average(round_id, total, contributors, pool_size, dim)

        return dp_mean

    def run(self) -> dict[str, Any]:
        """Run (or resume) to the configured number of rounds; return the summary."""
        f = self.cfg.federated
        state = self.load_checkpoint() or self.initial_state()
        metrics_path = self.run_dir / "metrics.jsonl"
        # rewrite the metrics file from the checkpoint: drops any line past the last checkpoint
        atomic_write_bytes(metrics_path, "".join(json.dumps(r) + "\n" for r in state.history).encode())
        self.observer.truncate_after(state.round_id)
        if state.round_id > 0:
            self._say(f"resuming {self.run_dir} after round {state.round_id}/{f.rounds}")
        for round_id in range(state.round_id + 1, f.rounds + 1):
            start = time.perf_counter()
            row = self.run_round(state, round_id)
            if round_id % f.eval_every == 0 or round_id == f.rounds:
                row.update(self.evaluate(state))
                self._say(self._line(row))
            row["seconds"] = round(time.perf_counter() - start, 3)
            state.history.append(row)
            self.save_checkpoint(state)
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        self.observer.release(state.shared, state.round_id)
        summary = self.write_summary(state)
        if self.privacy is not None:
            self.privacy.close()
        return summary

    # -- reporting ----------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.progress:
            tqdm.write(text)

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
        summary = {
            "run_dir": str(self.run_dir),
            "dataset": {"kind": self.cfg.data.kind, "users": self.split.n_users,
                        "items": self.split.n_items},
            "model": self.cfg.model.kind,
            "rounds": state.round_id,
            "selected_round": best["round"],
            "selection": f"round with the highest validation HR@{k}",
            "selected_metrics": {key: v for key, v in best.items()
                                 if key.startswith(("valid_", "test_"))},
            "last_round_metrics": {key: v for key, v in evaluated[-1].items()
                                   if key.startswith(("valid_", "test_"))},
            "popularity_baseline": evaluate_popularity(self.split, k=k),
            "shared_parameters": self.spec.size,
            "protocol": self.protocol.describe(),
            "privacy": (self.privacy.statement(state.round_id, with_ledger=True)
                        if self.privacy else NO_DP),
            "privacy_details": self.privacy.report(state.round_id) if self.privacy else None,
            "seconds_per_round": float(np.mean([r["seconds"] for r in state.history])),
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
        f"{summary['dataset']['items']} items); model: {summary['model']} "
        f"({summary['shared_parameters']} shared parameters)",
        f"- rounds: {summary['rounds']}; selected round {summary['selected_round']} "
        f"({summary['selection']})",
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


def run_training(cfg: Config, *, resume: bool = False, overwrite: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Train a federated recommender as ``cfg`` describes; return the summary."""
    return Simulation(cfg, resume=resume, overwrite=overwrite, progress=progress).run()
