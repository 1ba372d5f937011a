"""CLI arguments: every subcommand with generated argument lists (unknown flags, bad numbers,
NaN/inf, huge values, empty strings, missing files, directories for files, binary files).

Each case ends with exit status 0 or 2 and a one-line message (argparse: its usage, then one
``error:`` line), never a traceback, never a hang (each case runs under an alarm). Cases call
``ffm_private.cli.main`` in-process; the work behind a valid command (pretraining, the
attacks) is replaced by a stop once every argument has been checked, so a case takes
milliseconds. A few subprocess cases run the real entry point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffm_private import cli
from ffm_private.config import Config, to_toml

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGALRM")

ROOT = Path(__file__).resolve().parents[2]
#: seconds one in-process case may take before it counts as a hang
LIMIT = 30.0


class Reached(BaseException):
    """The command got past its argument checks to the real work (a valid command)."""


class Hang(BaseException):
    """A case ran past LIMIT."""


@contextmanager
def bounded(seconds: float):
    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def warm_imports() -> None:
    """Import what the commands import lazily, so the time bound is for the command itself."""
    import opacus.accountants  # noqa: F401
    from opacus.accountants.analysis.prv import domain  # noqa: F401

    import attacks.context  # noqa: F401

    cli.build_parser()


# -- the files and directories a path argument can name ------------------------------------------
def build_world(base: Path, data_dir: Path) -> Path:
    """A finished tiny run (for evaluate and audit), a valid config, and the sandbox cwd."""
    from ffm_private.simulation import run_training

    cfg = Config(run_dir=str(base / "done")).replace(**{
        "data.path": str(data_dir), "data.protocol": "pfedrec", "model.dim": 8,
        "model.history_length": 8, "pretrain.epochs": 1, "federated.rounds": 1,
        "federated.client_fraction": 0.2, "evaluation.full_ranking": False})
    run_training(cfg, progress=False)
    (base / "run.toml").write_text(to_toml(cfg.replace(run_dir=str(base / "trained"))))
    cwd = base / "cwd" / "deep"  # relative run directories land here, never in the repository
    cwd.mkdir(parents=True)
    refresh(base)
    warm_imports()
    return base


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_data_dir):
    return build_world(tmp_path_factory.mktemp("cli-fuzz"), tiny_data_dir)


def refresh(base: Path) -> None:
    """Rewrite the bad files (a case may have overwritten one, e.g. with --plot)."""
    (base / "adir").mkdir(exist_ok=True)
    (base / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (base / "latin1.toml").write_bytes("run_dir = 'caf\xe9'\n".encode("latin-1"))
    (base / "empty.toml").write_bytes(b"")
    (base / "missing.toml").unlink(missing_ok=True)


def _path(base: Path):
    names = ["missing.toml", "adir", "binary.bin", "latin1.toml", "empty.toml", "run.toml",
             "done", "done/config.toml", "done/checkpoints", "done/metrics.jsonl"]
    return st.one_of(st.sampled_from([str(base / n) for n in names]),
                     st.sampled_from(["", ".", " ", "\x00", "a\x00b", "new.npz", "out.png"]),
                     TEXT)


TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
               max_size=12)
NUMBERS = st.one_of(
    st.sampled_from(["0", "-1", "1", "2", "3", "0.5", "0.01", "1e-300", "5e-324", "1e308",
                     "1e309", "nan", "NaN", "inf", "-inf", "9223372036854775808",
                     "1" + "0" * 400, "0x10", "1_000", " 2", "", "abc", "-5e3", "1e9",
                     "1000000000", "2147483648"]),
    st.integers(-2**70, 2**70).map(str), st.floats().map(repr))
SET_KEYS = ["federated.rounds", "federated.lr", "federated.client_fraction",
            "data.public_fraction", "model.dim", "run_dir", "privacy.mode",
            "privacy.target_epsilon", "protocol.name", "pretrain.epochs", "bogus.key", "x"]
SETS = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SET_KEYS), st.one_of(NUMBERS, TEXT)),
    st.sampled_from(["noequals", "=1", "a.b.c=1", "federated.rounds", "privacy.mode=user"]))
JUNK = st.sampled_from(["--bogus", "-x", "--", "-", "", "--resume=1", "--rounds", "-h"])


def _flags(base: Path) -> dict[str, dict[str, st.SearchStrategy | None]]:
    path, one = _path(base), NUMBERS
    many = st.lists(NUMBERS, min_size=1, max_size=3)
    config = {"--config": path, "-c": path, "--set": SETS, "-s": SETS, "--run-dir": path}
    return {
        "train": {**config, "--resume": None, "--overwrite": None, "--quiet": None,
                  "-q": None, "--json": None},
        "pretrain": {**config, "--out": path, "-q": None},
        "evaluate": {"--run": path},
        "config": {},
        "budget": {
            "--config": path, "--set": SETS, "--epsilon": many, "--noise": many,
            "--delta": one, "--rounds": one, "--client-rate": one, "--local-steps": one,
            "--example-rate": one, "--personal-steps": one, "--personal-rate": one,
            "--max-participations": one, "--points": one, "--plot": path,
            "--mode": st.sampled_from(["user", "example", "none", ""]),
            "--placement": st.sampled_from(["central", "distributed", "x"]),
            "--accountant": st.sampled_from(["prv", "rdp", "gdp", ""])},
        "audit": {
            "--run": path, "--out": path, "--seed": one, "--bootstrap": one,
            "--a2-users": one, "--a2-pool": one, "--shadows": one, "--canaries": one,
            "--beta": one, "--a6-rounds": one, "-q": None,
            "--attacks": st.lists(st.sampled_from(["a1", "a2", "a3", "a6", "a9", ""]),
                                  min_size=1, max_size=3),
            "--views": st.lists(st.sampled_from(["server", "public", "x"]), min_size=1,
                                max_size=2),
            "--mechanism": st.sampled_from(["noise-off", "no-clipping", "x"]),
            "--format": st.lists(st.sampled_from(["md", "html", "pdf"]), min_size=1,
                                 max_size=2)},
    }


def argv_for(base: Path, command: str):
    """An argument list for ``command``: known flags with drawn values, and junk tokens."""
    flags = _flags(base)[command]

    def token(flag: str):
        value = flags[flag]
        if value is None:
            return st.just([flag])
        return value.map(lambda v: [flag, *(v if isinstance(v, list) else [v])])

    item = st.one_of(JUNK.map(lambda j: [j]), *(token(f) for f in flags)) if flags \
        else JUNK.map(lambda j: [j])
    return st.lists(item, max_size=6).map(lambda parts: [command, *sum(parts, [])])


# -- one case --------------------------------------------------------------------------------------
def run_case(argv: list[str], capsys) -> tuple[object, str]:
    """Run ``ffm-private argv`` in-process: (exit status or "reached", stderr)."""
    try:
        with bounded(LIMIT):
            status: object = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    except Reached:
        status = "reached"
    err = capsys.readouterr().err
    return status, err


def check(argv: list[str], status: object, err: str) -> None:
    assert "Traceback" not in err, (argv, err)
    assert status in (0, 2, "reached"), (argv, status, err)
    if status == 2:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert lines, (argv, "exit status 2 without a message")
        if lines[0].startswith("usage:"):  # argparse: usage, then one error line
            assert lines[-1].startswith("ffm-private") and ": error: " in lines[-1], err
        else:
            assert len(lines) == 1, (argv, err)


def install_stubs(setattr_) -> None:
    """Replace the work behind a valid command (pretraining, attacks) by raising Reached."""
    import attacks.audit as audit
    import ffm_private.pretrain as pretrain
    from ffm_private.simulation import Simulation

    def reached(*args, **kwargs):
        raise Reached

    def audit_checked(run, options):  # the run directory is opened and checked, then stop
        from attacks.context import AuditContext

        AuditContext.from_run(run, seed=options.seed, progress=False)
        raise Reached

    setattr_(Simulation, "_backbone", reached)
    setattr_(pretrain, "pretrain_backbone", reached)
    setattr_(audit, "run_audit", audit_checked)


@pytest.fixture
def stubbed(monkeypatch, world):
    """The stubs, with cwd in the sandbox."""
    install_stubs(monkeypatch.setattr)
    monkeypatch.chdir(world / "cwd" / "deep")
    return world


COMMANDS = ["train", "pretrain", "evaluate", "config", "budget", "audit"]


FUZZ = settings(max_examples=int(os.environ.get("FFM_PRIVATE_CLI_CASES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("command", COMMANDS)
@FUZZ
@given(data=st.data())
def test_generated_arguments_end_in_status_0_or_2_with_one_line(command, stubbed, capsys, data):
    refresh(stubbed)
    argv = data.draw(argv_for(stubbed, command))
    start = time.perf_counter()
    status, err = run_case(argv, capsys)
    check(argv, status, err)
    assert time.perf_counter() - start < LIMIT


@FUZZ
@given(data=st.data(), command=st.sampled_from([*COMMANDS, "", "bogus", "--help", "-x"]))
def test_any_first_token(stubbed, capsys, data, command):
    argv = [command, *data.draw(st.lists(st.one_of(JUNK, TEXT, NUMBERS), max_size=3))]
    status, err = run_case(argv, capsys)
    check(argv, status, err)


# -- what the fuzz found: each now a refusal naming the argument, at once ------------------------
@pytest.mark.parametrize("args, named", [
    (["--rounds", "10", "--noise", "1", "--points", "0"], "argument --points"),
    (["--rounds", "10", "--noise", "1", "--points", "1000000000"], "argument --points"),
    (["--rounds", "10", "--noise", "1", "--plot", "{dir}"], "--plot"),
    (["--rounds", "10", "--noise", "1", "--plot", ""], "--plot"),
    (["--rounds", "10", "--noise", "1e-300"], "1e-300"),
    (["--rounds", "1000000000", "--noise", "1"], "1000000000"),
    (["--rounds", "2147483647", "--epsilon", "1"], "steps=2147483647"),
])
def test_budget_arguments_the_fuzz_broke_are_refused(tmp_path, capsys, args, named):
    argv = ["budget", *(a.replace("{dir}", str(tmp_path)) for a in args)]
    warm_imports()
    start = time.perf_counter()
    status, err = run_case(argv, capsys)
    check(argv, status, err)
    assert status == 2 and named.replace("{dir}", str(tmp_path)) in err, err
    assert time.perf_counter() - start < 10  # refused before any long search
    assert not any(tmp_path.iterdir())  # no plot written


@pytest.mark.parametrize("args, named", [
    (["--run-dir", "{base}/done/config.toml", "--out", "b.npz"], "is a file, not a directory"),
    (["--config", "{base}/run.toml", "--out", "{base}/adir"], "--out"),
    (["--config", "{base}/run.toml", "--out", ""], "--out"),
])
def test_pretrain_arguments_the_fuzz_broke_are_refused(stubbed, capsys, args, named):
    argv = ["pretrain", *(a.replace("{base}", str(stubbed)) for a in args)]
    status, err = run_case(argv, capsys)
    check(argv, status, err)
    assert status == 2 and named in err, err


# -- the real entry point --------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["train", "--set", "federated.lr=nan"],
    ["budget", "--rounds", "nan", "--noise", "1"],
    ["evaluate", "--run", "\x01missing"],
    ["audit", "--run", "."],
    ["bogus"],
])
def test_entry_point_gives_status_2_and_one_line(tmp_path, args):
    proc = subprocess.run([sys.executable, "-m", "ffm_private.cli", *args], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].count("error") >= 1, proc.stderr
    assert not any(tmp_path.iterdir())  # a refused command leaves nothing behind
