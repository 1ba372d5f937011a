"""Count fuzz outcomes for docs/reliability.md: ``python -m tests.reliability.fuzz_report``.

Draws inputs from the same strategies as the fuzz tests and classifies each: accepted,
refused with the project's typed error, or anything else (a bug). Prints one table.
"""

from __future__ import annotations

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


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
