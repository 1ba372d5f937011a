"""``ffm-private tune``: hyper-parameter search on validation HR@k only (Optuna, TPE).

Why a module of its own: tuning must never see a test metric. Each trial is an ordinary run
directory under the tune directory, but its evaluation rounds score the *validation* items
only (the test items are never ranked while tuning), and the objective reads nothing but
those validation metrics. A trial's value is the highest validation HR@k over its evaluated
rounds: the same round-selection rule the run summary uses. The median pruner stops a trial
whose validation HR@k at a round falls below the median of earlier trials at that round.

The tune directory holds::

    study.db          Optuna RDB storage (sqlite): rerunning the command continues the study
    tune.json         the base configuration and the search space the study was started with
    data/             synthetic data shared by every trial (when the config generates it)
    backbones/        pretrained backbones, shared by trials whose backbone inputs are equal
    trials/trial-NNNN ordinary run directories (config.toml, metrics.jsonl, summary, ...)
    trials.csv / .md  the trials table
    best.toml         the best trial's configuration (train it to get its test figure)
    history.png       optimisation history (each trial's value and the best so far)

``optuna`` is an optional dependency (``pip install ffm-private[tune]``), imported only here.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffm_private import config as config_mod
from ffm_private.config import Config, ConfigError
from ffm_private.errors import FFMPrivateError, RunDirectoryError

STUDY_NAME = "ffm-private-tune"
STUDY_FILE = "study.db"
META_FILE = "tune.json"
BEST_FILE = "best.toml"
TRIALS_DIR = "trials"

#: The default search space: client learning rates, adapter ranks and local epochs.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "federated.lr": {"low": 1e-3, "high": 1e-1, "log": True},
    "federated.personal_lr": {"low": 1e-3, "high": 3e-1, "log": True},
    "model.global_rank": {"choices": [4, 8, 16, 32]},
    "federated.local_epochs": {"low": 1, "high": 3},
    "federated.personal_epochs": {"low": 1, "high": 3},
}

TUNE_EPILOG = """\
examples:
  ffm-private tune --config run.toml --trials 30          # default search space
  ffm-private tune --config run.toml --trials 30          # again: continues the study
  ffm-private tune --config run.toml --trials 20 --space space.toml
  ffm-private tune --trials 10 --param federated.lr=1e-4:1e-1:log --param model.global_rank=8,16
  ffm-private train --config runs/quickstart-tune/best.toml   # the best config, with test metrics

space file (TOML; [tune.space] replaces the default space, --param then edits it):
  [tune]
  trials = 30              # used when --trials is not given
  n_startup_trials = 5     # median pruner: trials run in full before pruning starts
  n_warmup_steps = 2       # median pruner: rounds of a trial never pruned
  [tune.space]
  "federated.lr" = {low = 1e-3, high = 1e-1, log = true}
  "model.global_rank" = {choices = [4, 8, 16]}
  "federated.local_epochs" = {low = 1, high = 3}
"""


class TuneError(RunDirectoryError):
    """The tune directory holds a study of another configuration or search space."""


@dataclass(frozen=True)
class Dimension:
    """One searched config field: a range (``low``..``high``, optionally log) or choices."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def integer(self) -> bool:
        return not self.choices and isinstance(self.low, int) and isinstance(self.high, int)

    def as_dict(self) -> dict[str, Any]:
        if self.choices:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}

    def suggest(self, trial: Any) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)


@dataclass
class TuneSettings:
    """What the search does: its space, the pruner's patience and the number of trials."""

    space: dict[str, Dimension] = field(default_factory=dict)
    trials: int | None = None
    n_startup_trials: int = 5
    n_warmup_steps: int = 1


def dimension(key: str, spec: Mapping[str, Any]) -> Dimension:
    """Parse one ``[tune.space]`` entry; a bad one is a ConfigError naming the key."""
    where = f"tune.space.{key}"
    unknown = sorted(set(spec) - {"low", "high", "log", "choices"})
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} (use low/high/log or choices)")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list, alone")
        if not all(isinstance(c, bool | int | float | str) for c in choices):
            raise ConfigError(f"{where}: choices must be numbers, strings or booleans")
        return Dimension(key, choices=tuple(choices))
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ConfigError(f"{where}.{name} must be a finite number, got {value!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log must be true or false")
    if low > high:
        raise ConfigError(f"{where}: low = {low!r} exceeds high = {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low!r}")
    return Dimension(key, low=low, high=high, log=log)


def parse_param(text: str) -> Dimension:
    """``KEY=LOW:HIGH[:log]`` (integers if both bounds are) or ``KEY=A,B,C`` (choices)."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value:
        raise ConfigError(f"--param {text!r} must look like KEY=LOW:HIGH[:log] or KEY=A,B,C")

    def scalar(word: str) -> Any:
        return config_mod.parse_override(f"v={word.strip()}")[1]

    if ":" in value:
        parts = value.split(":")
        log = len(parts) == 3 and parts[2].strip() == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise ConfigError(f"--param {text!r}: a range is LOW:HIGH or LOW:HIGH:log")
        return dimension(key, {"low": scalar(parts[0]), "high": scalar(parts[1]), "log": log})
    return dimension(key, {"choices": [scalar(w) for w in value.split(",")]})


def read_settings(path: str | Path | None, params: list[str] | None = None,
                  trials: int | None = None) -> TuneSettings:
    """The search settings: the default space, or a space file's, then ``--param`` edits."""
    settings = TuneSettings(space={k: dimension(k, v) for k, v in DEFAULT_SPACE.items()})
    if path is not None:
        text = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else None
        if text is None:
            raise ConfigError(f"space file {path} does not exist")
        raw = config_mod.parse_toml(text, str(path))
        unknown = sorted(set(raw) - {"tune"})
        if unknown:
            raise ConfigError(f"{path}: unknown table [{unknown[0]}] (only [tune])")
        tune = dict(raw.get("tune", {}))
        space = tune.pop("space", None)
        if space is not None:
            if not isinstance(space, Mapping) or not space:
                raise ConfigError(f"{path}: [tune.space] must be a non-empty table")
            settings.space = {}
            for key, spec in space.items():
                if not isinstance(spec, Mapping):
                    raise ConfigError(f"tune.space.{key} must be a table (low/high or choices)")
                settings.space[key] = dimension(key, spec)
        for name in ("trials", "n_startup_trials", "n_warmup_steps"):
            if name in tune:
                value = tune.pop(name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError(f"tune.{name} must be an integer >= 0, got {value!r}")
                setattr(settings, name, value)
        if tune:
            raise ConfigError(f"{path}: unknown key tune.{sorted(tune)[0]}")
    for text in params or []:
        dim = parse_param(text)
        settings.space[dim.key] = dim
    if trials is not None:
        settings.trials = trials
    if settings.trials is None or settings.trials < 1:
        raise ConfigError("the number of trials must be given (--trials N, N >= 1, or "
                          "tune.trials in the space file)")
    return settings


def check_space(base: Config, space: Mapping[str, Dimension]) -> None:
    """Every searched key is a config field, and every bound / choice is a valid value."""
    for dim in space.values():
        if dim.key.split(".")[0] not in ("data", "model", "pretrain", "federated", "evaluation"):
            raise ConfigError(f"tune.space.{dim.key}: only data, model, pretrain, federated "
                              "and evaluation fields can be searched")
        if dim.key.startswith("evaluation."):
            raise ConfigError(f"tune.space.{dim.key}: the metric itself is not searched")
        values = list(dim.choices) if dim.choices else [dim.low, dim.high]
        for value in values:
            try:
                base.replace(**{dim.key: value})
            except ConfigError as err:
                raise ConfigError(f"tune.space.{dim.key} = {value!r}: {err}") from None


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _trial_config(base: Config, params: Mapping[str, Any], run_dir: Path,
                  backbone: Path | None) -> Config:
    overrides: dict[str, Any] = {**params, "run_dir": str(run_dir)}
    if backbone is not None:
        overrides["pretrain.checkpoint"] = str(backbone)
    return base.replace(**overrides)


def _backbone_key(cfg: Config) -> str:
    """What the pretrained backbone depends on: data, model, pretraining and the seed."""
    d = cfg.to_dict()
    return _digest({"data": d["data"], "model": d["model"], "pretrain": d["pretrain"],
                    "seed": d["federated"]["seed"],
                    "negatives": d["data"]["num_train_negatives"]})[:16]


class Tuner:
    """Runs and records a study in one tune directory (resumable)."""

    def __init__(self, base: Config, settings: TuneSettings, out: str | Path, *,
                 progress: bool = True,
                 observe: Callable[[int, dict[str, float]], None] | None = None) -> None:
        try:
            import optuna
        except ImportError:  # pragma: no cover - depends on the environment
            raise ConfigError("ffm-private tune needs optuna: pip install 'ffm-private[tune]'"
                              ) from None
        self.optuna = optuna
        self.out = Path(out)
        self.settings = settings
        self.progress = progress
        self.observe = observe  # a probe: every metrics dict the objective receives
        k = base.evaluation.k
        self.metric = f"valid_hr@{k}"
        if base.data.kind == "synthetic" and not base.data.path:
            base = base.replace(**{"data.path": str(self.out / "data")})
        self.base = base
        check_space(base, settings.space)
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_meta()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = optuna.storages.RDBStorage(f"sqlite:///{(self.out / STUDY_FILE).resolve()}")
        self.study = optuna.create_study(
            study_name=STUDY_NAME, storage=self.storage, direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=base.federated.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=settings.n_startup_trials,
                                               n_warmup_steps=settings.n_warmup_steps))
        self._recover_interrupted()

    # -- the study directory ---------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        base = self.base.to_dict()
        return {"base_config": base, "base_digest": _digest(base),
                "space": {k: d.as_dict() for k, d in self.settings.space.items()},
                "metric": self.metric}

    def _check_meta(self) -> None:
        """A rerun continues the same study only: same base config, same search space."""
        path = self.out / META_FILE
        meta = self._meta()
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("base_digest") != meta["base_digest"]:
                raise TuneError(f"{self.out} holds a study of another base configuration; "
                                "use another --out (or the same --config and --set)")
            if saved.get("space") != meta["space"]:
                raise TuneError(f"{self.out} holds a study of another search space "
                                f"({sorted(saved.get('space', {}))}); use another --out")
            return
        if (self.out / STUDY_FILE).exists():
            raise TuneError(f"{self.out} holds {STUDY_FILE} but no {META_FILE}: not a study "
                            "this command started; use another --out")
        from ffm_private.storage import atomic_write_json

        atomic_write_json(path, meta)

    def _recover_interrupted(self) -> None:
        """Trials a killed process left RUNNING, or interrupted by Ctrl-C, are run again."""
        TrialState = self.optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        for t in trials:
            if t.state == TrialState.RUNNING:
                self.storage.set_trial_user_attr(t._trial_id, "interrupted", True)
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            elif not (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")):
                continue
            if t.number not in retried and t.params:
                self.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number},
                                         skip_if_exists=False)

    def finished(self) -> int:
        """Trials that count towards ``--trials``: complete, pruned or failed (not interrupted)."""
        TrialState = self.optuna.trial.TrialState
        done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return sum(1 for t in self.study.get_trials(deepcopy=False)
                   if t.state in done and not t.user_attrs.get("interrupted"))

    # -- one trial -------------------------------------------------------------------------
    def _backbone_for(self, cfg: Config) -> tuple[Path | None, Path]:
        cache = self.out / "backbones" / f"{_backbone_key(cfg)}.npz"
        if cfg.pretrain.checkpoint:
            return None, cache
        return (cache if cache.exists() else None), cache

    def objective(self, trial: Any) -> float:
        params = {key: dim.suggest(trial) for key, dim in self.settings.space.items()}
        run_dir = self.out / TRIALS_DIR / f"trial-{trial.number:04d}"
        if run_dir.exists():  # a number is never reused by Optuna: a stale directory
            shutil.rmtree(run_dir)
        probe = _trial_config(self.base, params, run_dir, None)
        backbone, cache = self._backbone_for(probe)
        cfg = _trial_config(self.base, params, run_dir, backbone)
        trial.set_user_attr("run_dir", str(run_dir))
        best: dict[str, Any] = {"value": -math.inf, "round": 0, "metrics": {}}

        def on_validation(round_id: int, metrics: dict[str, float]) -> None:
            if self.observe is not None:
                self.observe(round_id, dict(metrics))
            value = float(metrics[self.metric])
            if value > best["value"]:
                best.update(value=value, round=round_id, metrics=dict(metrics))
            trial.report(value, round_id)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_round", round_id)
                raise self.optuna.TrialPruned(f"validation {self.metric} {value:.4f} at round "
                                              f"{round_id} is below the median")

        start = time.perf_counter()
        try:
            sim = ValidationOnlySimulation(cfg, on_validation, progress=False)
            if backbone is None and not cfg.pretrain.checkpoint:
                made = sim.run_dir / "checkpoints" / "backbone.npz"
                if made.exists() and not cache.exists():
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(made, cache)
            sim.run()
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except FFMPrivateError as err:
            trial.set_user_attr("error", str(err))
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
            if best["round"]:
                trial.set_user_attr("selected_round", best["round"])
                trial.set_user_attr("selected_metrics", best["metrics"])
        return float(best["value"])

    def run(self) -> Any:
        """Run trials until the study holds ``settings.trials`` finished ones; write reports."""
        from tqdm.auto import tqdm

        want = int(self.settings.trials or 0)
        done = self.finished()
        bar = tqdm(total=want, initial=min(done, want), desc="tune", unit="trial",
                   disable=not (self.progress and sys.stderr.isatty()))
        try:
            while self.finished() < want:
                self.study.optimize(self.objective, n_trials=1, catch=(FFMPrivateError,))
                bar.update(1)
                best = self.best_trial()
                if best is not None:
                    bar.set_postfix({f"best {self.metric}": f"{best.value:.4f}"})
        finally:
            bar.close()
            self.write_reports()
        return self.best_trial()

    # -- reports ----------------------------------------------------------------------------
    def best_trial(self) -> Any:
        complete = [t for t in self.study.get_trials(deepcopy=False)
                    if t.state == self.optuna.trial.TrialState.COMPLETE]
        if not complete:
            return None
        return max(complete, key=lambda t: (t.value, -t.number))

    def best_config(self) -> Config | None:
        """The base configuration with the best trial's values; run_dir ``<out>/best``."""
        best = self.best_trial()
        if best is None:
            return None
        return _trial_config(self.base, best.params, self.out / "best", None)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for t in self.study.get_trials(deepcopy=False):
            sel = t.user_attrs.get("selected_metrics", {})
            note = t.user_attrs.get("error", "")
            if t.user_attrs.get("interrupted"):
                note = "interrupted (run again)"
            elif "pruned_at_round" in t.user_attrs:
                note = f"pruned at round {t.user_attrs['pruned_at_round']}"
            row: dict[str, Any] = {
                "trial": t.number, "state": t.state.name.lower(),
                self.metric: t.value if t.value is not None else sel.get(self.metric, ""),
                "selected_round": t.user_attrs.get("selected_round", ""),
                self.metric.replace("hr@", "ndcg@"): sel.get(
                    self.metric.replace("hr@", "ndcg@"), ""),
            }
            row.update({k: t.params.get(k, "") for k in self.settings.space})
            row.update({"seconds": t.user_attrs.get("seconds", ""), "note": note,
                        "run_dir": t.user_attrs.get("run_dir", "")})
            out.append(row)
        return out

    def write_reports(self) -> None:
        from ffm_private.storage import atomic_write_bytes

        rows = self.rows()
        if not rows:
            return
        columns = list(rows[0])
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.out / "trials.csv", buf.getvalue().encode())
        atomic_write_bytes(self.out / "trials.md", self._markdown(rows, columns).encode())
        best_cfg = self.best_config()
        if best_cfg is not None:
            best = self.best_trial()
            header = (f"# Best of {self.finished()} trials of {self.out}: "
                      f"{self.metric} {best.value:.4f} at round "
                      f"{best.user_attrs.get('selected_round', '?')} (trial {best.number}).\n"
                      "# Selected on validation only; train it to measure its test metrics.\n")
            atomic_write_bytes(self.out / BEST_FILE,
                               (header + config_mod.to_toml(best_cfg)).encode())
        self._plot(rows)

    def _markdown(self, rows: list[dict[str, Any]], columns: list[str]) -> str:
        best = self.best_trial()
        lines = [f"# Tuning study: {self.out}", "",
                 f"Objective: the highest {self.metric} (validation) over a trial's evaluated "
                 "rounds (test items are never scored while tuning). Sampler TPE, median "
                 "pruner.", ""]
        if best is not None:
            lines += [f"Best: trial {best.number}, {self.metric} {best.value:.4f}; "
                      f"config in {BEST_FILE}.", ""]
        shown = [c for c in columns if c != "run_dir"]
        lines.append("| " + " | ".join(shown) + " |")
        lines.append("|" + "---|" * len(shown))
        for row in rows:
            lines.append("| " + " | ".join(_cell(row[c]) for c in shown) + " |")
        return "\n".join(lines) + "\n"

    def _plot(self, rows: list[dict[str, Any]]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        points = [(r["trial"], r[self.metric]) for r in rows
                  if r["state"] == "complete" and r[self.metric] != ""]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        if points:
            xs, ys = zip(*points, strict=True)
            best, running = -math.inf, []
            for y in ys:
                best = max(best, y)
                running.append(best)
            ax.scatter(xs, ys, s=14, label="trial")
            ax.step(xs, running, where="post", color="C1", label="best so far")
            ax.legend()
        ax.set_xlabel("trial")
        ax.set_ylabel(f"validation {self.metric}")
        ax.set_title("optimisation history")
        fig.tight_layout()
        tmp = self.out / ".history.png.tmp"
        fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        tmp.replace(self.out / "history.png")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _validation_only_class() -> type:
    from ffm_private.evaluation import evaluate_state
    from ffm_private.simulation import Simulation

    class _ValidationOnly(Simulation):
        """A run whose evaluation rounds rank the validation items only (never a test item)."""

        def __init__(self, cfg: Config, on_validation: Callable[[int, dict[str, float]], None],
                     **kwargs: Any) -> None:
            self._on_validation = on_validation
            super().__init__(cfg, **kwargs)

        def evaluate(self, state: Any) -> dict[str, float]:
            metrics = evaluate_state(self._model(self.split.n_users), self.split, self.cfg,
                                     state, targets=("valid",))
            self._on_validation(state.round_id, metrics)
            return metrics

        def _line(self, row: dict[str, Any]) -> str:
            k = self.cfg.evaluation.k
            return (f"round {row['round']:>3}/{self.cfg.federated.rounds}  "
                    f"valid HR@{k} {row[f'valid_hr@{k}']:.4f}")

    return _ValidationOnly


def ValidationOnlySimulation(cfg: Config, on_validation: Callable[[int, dict[str, float]], None],
                             **kwargs: Any) -> Any:
    """A :class:`~ffm_private.simulation.Simulation` that scores validation items only."""
    return _validation_only_class()(cfg, on_validation, **kwargs)


def default_out(cfg: Config) -> Path:
    run = Path(cfg.run_dir)
    return run.with_name(run.name + "-tune")


def cmd_tune(args: argparse.Namespace) -> int:
    overrides = dict(config_mod.parse_override(o) for o in args.set or [])
    base = (config_mod.load(args.config, overrides) if args.config
            else Config().replace(**overrides))
    settings = read_settings(args.space, args.param, args.trials)
    out = Path(args.out) if args.out else default_out(base)
    tuner = Tuner(base, settings, out, progress=not args.quiet)
    try:
        best = tuner.run()
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to continue the study in {out}",
              file=sys.stderr)
        return 130
    print((out / "trials.md").read_text() if (out / "trials.md").exists() else "")
    if best is None:
        print(f"error: no trial of {out} completed; see trials.md", file=sys.stderr)
        return 2
    print(f"best config: {out / BEST_FILE}  (ffm-private train --config {out / BEST_FILE})")
    return 0


def add_tune_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``tune`` on an argparse sub-parser collection (``ffm-private tune``)."""
    p = subparsers.add_parser(
        "tune", help="search hyper-parameters on validation HR@k (Optuna TPE, median pruner)",
        description="Run a resumable Optuna study (TPE sampler, median pruner on per-round "
        "validation HR@k). Test items are never scored while tuning. Each trial is a run "
        "directory under the tune directory; writes trials.csv/.md, best.toml and "
        "history.png. Rerun the same command to continue the study.",
        epilog=TUNE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", help="base TOML run configuration (default: quickstart)")
    p.add_argument("--set", "-s", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one base config value (repeatable)")
    p.add_argument("--trials", "-n", type=int, default=None,
                   help="finished trials the study should hold (a rerun runs the rest)")
    p.add_argument("--space", metavar="TOML", help="search-space file ([tune] table)")
    p.add_argument("--param", "-p", action="append", metavar="KEY=LOW:HIGH[:log]|A,B,C",
                   help="search this config field (replaces its default range; repeatable)")
    p.add_argument("--out", "-o", help="tune directory (default: <run_dir>-tune)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tune)
    return p
