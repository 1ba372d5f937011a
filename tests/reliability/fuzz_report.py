"""Count fuzz outcomes for docs/reliability.md: ``python -m tests.reliability.fuzz_report``.

Draws inputs from the same strategies as the fuzz tests and classifies each: accepted,
refused with the project's typed error, or anything else (a bug). Prints one table for the
configuration and loaders, and one for CLI arguments (``--cli N`` for N cases per command).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

from hypothesis.errors import NonInteractiveExampleWarning

from ffm_private import config as C
from ffm_private.data import load_csv, load_movielens_100k
from ffm_private.errors import FFMPrivateError
from tests.reliability import test_config_fuzz as cf
from tests.reliability import test_loader_fuzz as lf


def _classify(fn) -> str:
    start = time.perf_counter()
    try:
        fn()
        outcome = "accepted"
    except FFMPrivateError:
        outcome = "typed error"
    except Exception as err:  # noqa: BLE001 - counted and shown: this is what we look for
        print(f"  untyped {type(err).__name__}: {err}"[:200], file=sys.stderr)
        outcome = "other exception"
    if time.perf_counter() - start > 5:
        outcome += " (slow)"
    return outcome


def main(n: int = 300) -> None:
    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
    tmp = Path(tempfile.mkdtemp())
    table: dict[str, Counter] = {}

    def fields():
        raw: dict = {}
        for (section, key), value in cf.st.lists(cf.st.tuples(cf.st.sampled_from(cf.FIELDS),
                                                              cf.VALUES), min_size=1,
                                                 max_size=4).example():
            (raw.setdefault(section, {}) if section else raw)[key] = value
        C.from_dict(raw)

    def config_bytes():
        path = tmp / "c.toml"
        path.write_bytes(cf.st.binary(max_size=200).example())
        C.load(path)

    def round_trip():
        cfg = C.Config().replace(**cf.ACCEPTED.example())
        path = tmp / "rt.toml"
        path.write_bytes(C.to_toml(cfg).encode())
        assert C.load(path) == cfg

    def movielens(which):
        def run():
            lines = lf.LINES.example()
            load_movielens_100k(lf._ml_dir(tmp / "ml", **{which: b"\n".join(lines)}))
        return run

    def csv_file():
        rows = lf.st.lists(lf.st.lists(lf.CSV_CELLS, min_size=1, max_size=4),
                           max_size=6).example()
        delimiter = lf.st.sampled_from([",", ";", "\t", "", ";;", "\n", '"']).example()
        sep = delimiter if len(delimiter) == 1 else ","
        path = tmp / "log.csv"
        path.write_text("user,item,timestamp\n".replace(",", sep)
                        + "\n".join(sep.join(r) for r in rows), encoding="utf-8")
        load_csv(path, delimiter=delimiter)

    cases = {"config: any value in any field": fields, "config: any file bytes": config_bytes,
             "config: accepted -> to_toml -> load": round_trip,
             "u.data": movielens("u_data"), "u.user": movielens("u_user"),
             "u.item": movielens("u_item"), "csv": csv_file}
    for name, fn in cases.items():
        table[name] = Counter(_classify(fn) for _ in range(n))
    print("| input | cases | accepted | typed error | other exception |\n|---|---|---|---|---|")
    for name, counts in table.items():
        print(f"| {name} | {sum(counts.values())} | {counts['accepted']} | "
              f"{counts['typed error']} | {counts['other exception']} |")


def cli_main(n: int = 100) -> None:
    """CLI arguments per subcommand, through the same stubs and checks as the fuzz test."""
    import torch

    from ffm_private.data.synthetic import SyntheticConfig, generate_synthetic
    from tests.reliability import test_cli_fuzz as cz

    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    generate_synthetic(tmp / "data", SyntheticConfig(n_users=80, n_items=150,
                                                     n_interactions=4000, min_per_user=20,
                                                     seed=0))
    (tmp / "world").mkdir()
    base = cz.build_world(tmp / "world", tmp / "data")
    cz.install_stubs(setattr)
    os.chdir(base / "cwd" / "deep")
    print("| command | cases | exit 0 | exit 2, one-line message | anything else |")
    print("|---|---|---|---|---|")
    for command in cz.COMMANDS:
        strategy, counts = cz.argv_for(base, command), Counter()
        for _ in range(n):
            cz.refresh(base)
            argv = strategy.example()
            out, err = io.StringIO(), io.StringIO()
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                        cz.bounded(cz.LIMIT):
                    status: object = cz.cli.main(argv)
            except SystemExit as exit_:
                status = exit_.code
            except cz.Reached:
                status = 0
            except BaseException as exc:  # noqa: BLE001 - counted and shown: the bugs
                print(f"  {argv!r}: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
                counts["else"] += 1
                continue
            try:
                cz.check(argv, status, err.getvalue())
            except AssertionError:
                print(f"  {argv!r}: status {status}: {err.getvalue()!r}"[:300], file=sys.stderr)
                counts["else"] += 1
                continue
            counts[status] += 1
        print(f"| {command} | {n} | {counts[0]} | {counts[2]} | {counts['else']} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--cli":
        cli_main(int(sys.argv[2]) if len(sys.argv) > 2 else 100)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
