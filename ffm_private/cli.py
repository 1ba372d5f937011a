"""The ``ffm-private`` command line: one entry point, one subcommand per job.

Every subcommand reads the same TOML run configuration; ``ffm-private config`` prints
every field with its default and meaning.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from ffm_private import config as config_mod

EPILOG = """\
examples:
  ffm-private train                                   # first run: private (DP over SecAgg+), audited
  ffm-private train --no-privacy                      # the same run in plaintext, to compare
  ffm-private train --config examples/movielens100k.toml --set data.path=/data/ml-100k
  ffm-private train --config run.toml --resume        # continue an interrupted run
  ffm-private train --json > summary.json             # scripts: the summary as JSON on stdout
  ffm-private evaluate --run runs/quickstart
  ffm-private pretrain --config run.toml --out backbone.npz
  ffm-private config                                  # every config field, default and meaning
  ffm-private budget --epsilon 1 4 8 --rounds 100 --client-rate 0.1   # plan a DP budget
  ffm-private audit --run runs/quickstart              # what leaks: every attack, full size

output: progress bars only when stderr is a terminal; otherwise one line per evaluated round.
--quiet prints only the final summary (and errors); --json prints only JSON on stdout.
"""


def _load(args: argparse.Namespace) -> config_mod.Config:
    """The run config: the given file, or the built-in first run (private unless
    ``--no-privacy``); ``--set`` overrides apply last."""
    overrides = dict(config_mod.parse_override(o) for o in args.set or [])
    if getattr(args, "run_dir", None):
        overrides["run_dir"] = args.run_dir
    no_privacy = getattr(args, "no_privacy", False)
    if args.config:
        if not no_privacy:
            return config_mod.load(args.config, overrides)
        return config_mod.without_privacy(config_mod.load(args.config)).replace(**overrides)
    base = config_mod.plaintext() if no_privacy else config_mod.quickstart()
    return base.replace(**overrides)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="TOML run configuration (default: the built-in "
                   "first run, examples/quickstart.toml). Run `ffm-private config` to see every "
                   "field.")
    p.add_argument("--set", "-s", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set federated.rounds=5")
    p.add_argument("--run-dir", help="override run_dir")
    p.add_argument("--no-privacy", action="store_true",
                   help="no differential privacy and plaintext aggregation (without --config: "
                   "examples/plaintext.toml, the first run without its protection)")


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only the final summary and errors (no progress, no round lines)")
    p.add_argument("--json", action="store_true",
                   help="print only a JSON summary on stdout (round lines go to stderr unless "
                   "--quiet)")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _output(args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """Where status lines go: stderr under --json (stdout holds only the JSON)."""
    from ffm_private import console

    return console.lines_to(sys.stderr) if args.json else contextlib.nullcontext()


def cmd_train(args: argparse.Namespace) -> int:
    from ffm_private.simulation import run_training

    cfg = _load(args)
    audit_wanted = (cfg.observation.audit or args.audit) and not args.no_audit
    if audit_wanted and not cfg.observation.enabled:
        print("error: the audit reads the observation log, which observation.enabled = false "
              "turns off (use --no-audit)", file=sys.stderr)
        return 2
    with _output(args):
        summary = run_training(cfg, resume=args.resume, overwrite=args.overwrite,
                               progress=not args.quiet)
        audit = _first_audit(cfg, progress=not args.quiet) if audit_wanted else None
    if args.json:
        _print_json({"summary": summary, "audit": audit.to_dict() if audit else None})
    else:
        print((Path(cfg.run_dir) / "summary.md").read_text(), end="")
        if audit is not None:
            print(f"\nLeakage audit ({', '.join(a.upper() for a in _audit_attacks())}; "
                  f"{audit.report.seconds:.0f} s; report {audit.paths['md']}; full audit: "
                  f"ffm-private audit --run {cfg.run_dir}):")
            for line in audit.lines():
                print(f"- {line}")
    if audit is not None and audit.report.failed:
        print("AUDIT FAILED: an epsilon lower bound exceeds the claimed epsilon", file=sys.stderr)
        return 1
    return 0


def _check_output_file(flag: str, path: str) -> None:
    """Refuse an output path that cannot be written as a file, before any work is done."""
    from ffm_private.errors import FFMPrivateError

    if not path.strip() or "\x00" in path:
        raise FFMPrivateError(f"{flag} {path!r} is not a file name")
    if Path(path).is_dir():
        raise FFMPrivateError(f"{flag} {path} is a directory, not a file name")


def _audit_attacks() -> tuple[str, ...]:
    from attacks.first_run import FIRST_RUN_ATTACKS

    return FIRST_RUN_ATTACKS


def _first_audit(cfg: config_mod.Config, *, progress: bool) -> Any:
    """The short audit of the run just trained (the CLI may import attacks; core may not)."""
    from attacks.first_run import run_first_audit
    from ffm_private import console

    console.say("audit: " + ", ".join(a.upper() for a in _audit_attacks())
                + " on the observation log", enabled=progress)
    return run_first_audit(cfg.run_dir, progress=progress)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ffm_private.errors import RunDirectoryError
    from ffm_private.pretrain import pretrain_backbone, public_users
    from ffm_private.simulation import load_split
    from ffm_private.storage import save_arrays

    cfg = _load(args)
    _check_output_file("--out", args.out)
    if Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
        raise RunDirectoryError(f"run_dir {cfg.run_dir} is a file, not a directory")
    with _output(args):
        split = load_split(cfg, Path(cfg.run_dir))
        users = public_users(split.n_users, cfg.data.public_fraction, cfg.federated.seed)
        state = pretrain_backbone(cfg.model, cfg.pretrain, split, users,
                                  num_negatives=cfg.data.num_train_negatives,
                                  seed=cfg.federated.seed, progress=not args.quiet)
    save_arrays(args.out, state)
    if args.json:
        _print_json({"out": str(args.out), "public_users": len(users),
                     "epochs": cfg.pretrain.epochs})
    else:
        print(f"pretrained backbone on {len(users)} public users -> {args.out} "
              f"(use it with pretrain.checkpoint = \"{args.out}\")")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ffm_private.run_view import RunView

    with RunView.open(args.run) as view:  # reads only: never pretrains, locks or writes
        state = view.checkpoint()
        if state is None:
            print(f"error: {args.run} has no checkpoint to evaluate", file=sys.stderr)
            return 2
        metrics: dict[str, Any] = {"round": state.round_id, **view.evaluate(state)}
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(config_mod.describe_fields())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ffm-private",
        description="Privacy-preserving federated foundation models for recommendation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="run federated training (in-process simulation)",
                       description="Pretrain the backbone on public users, then run federated "
                       "rounds; writes config, metrics.jsonl, checkpoints and a summary to "
                       "run_dir. Without --config: the first run (synthetic data, user-level "
                       "DP-FedAvg with distributed noise over SecAgg+, then a short audit).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run_dir")
    p.add_argument("--no-audit", action="store_true",
                   help="skip the short leakage audit that ends a run with observation.audit "
                   "(the first run)")
    p.add_argument("--audit", action="store_true",
                   help="end with the short leakage audit even if observation.audit is false")
    _add_output_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pretrain", help="pretrain the frozen backbone on public users only")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="where to write the backbone (.npz)")
    _add_output_args(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="evaluate a run's latest checkpoint")
    p.add_argument("--run", required=True, help="run directory")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("config", help="print every config field with its default and meaning")
    p.set_defaults(func=cmd_config)

    from ffm_private.privacy.planner import add_budget_command

    add_budget_command(sub)

    from attacks.cli import add_audit_command  # light: the attacks load when audit runs

    add_audit_command(sub)
    from ffm_private.tune import add_tune_command  # light: optuna loads when tune runs

    add_tune_command(sub)

    from ffm_private.flower.cli import add_flower_command  # flwr loads when it runs

    add_flower_command(sub)
    return parser


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM stops like Ctrl-C: the same clean path (every file written is complete)."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    from ffm_private.errors import FFMPrivateError
    from ffm_private.privacy.errors import PrivacyError

    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate) if argv is None else None
    try:
        return args.func(args)
    except config_mod.ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (FFMPrivateError, PrivacyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ": resume with --resume" if args.command == "train" else ""
        print(f"\ninterrupted{hint}", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
