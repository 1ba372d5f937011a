"""Real Flower processes on 127.0.0.1: a SuperLink, one SuperNode per user, ``flwr run``.

Each test bounds every wait and the launcher stops every process group in a ``finally``.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest

from ffm_private.simulation import Simulation
from tests.flower.conftest import load, tiny_toml, write_csv
from tests.flower.test_server_and_nodes import latest_global, metrics

pytestmark = [
    pytest.mark.flower, pytest.mark.slow,
    pytest.mark.skipif(shutil.which("flower-superlink") is None,
                       reason="the flower extra is not installed"),
]


def alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_plaintext_flower_run_equals_the_in_process_run_and_leaves_no_process(tmp_path):
    data = write_csv(tmp_path / "ratings.csv", 5)
    path = tmp_path / "run.toml"
    path.write_text(tiny_toml(data, tmp_path / "flower", rounds=1, eval_every=1))
    from ffm_private.flower.local import run_local

    started = {}
    out = io.StringIO()
    run_local(path, 5, timeout=480, round_timeout=240, out=out,
              on_started=lambda dep: started.setdefault("pids", dep.pids()))
    Simulation(load(path, tmp_path / "inproc"), progress=False).run()
    assert metrics(tmp_path / "flower") == metrics(tmp_path / "inproc"), out.getvalue()[-3000:]
    a, b = latest_global(tmp_path / "inproc"), latest_global(tmp_path / "flower")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-7)
    # every SuperLink / SuperNode process group (and their app processes) is gone
    assert len(started["pids"]) == 6
    assert not [p for p in started["pids"] if alive(p)]
    # personal state: on the nodes only
    nodes = sorted((tmp_path / "flower.nodes").glob("user-*/personal.npz"))
    assert len(nodes) == 5
