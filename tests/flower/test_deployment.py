"""Real Flower processes on 127.0.0.1: a SuperLink, one SuperNode per user, ``flwr run``.

Each test bounds every wait and the launcher stops every process group in a ``finally``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from pathlib import Path

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


def alive(pgid: int, wait: float = 10.0) -> bool:
    """Whether process group ``pgid`` still has a running (not zombie) member.

    Zombies count as gone: a killed member orphaned to an init that does not reap stays in
    the table as a zombie but runs nothing. Waits up to ``wait`` seconds for the group to go.
    """
    end = time.monotonic() + wait
    while True:
        running = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended while we looked
            if int(fields[2]) == pgid and fields[0] != "Z":
                running = True
                break
        if not running or time.monotonic() > end:
            return running
        time.sleep(0.2)


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


def test_ctrl_c_stops_every_process_the_launcher_started(tmp_path):
    import queue
    import re
    import signal
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path

    data = write_csv(tmp_path / "ratings.csv", 3)
    path = tmp_path / "run.toml"
    path.write_text(tiny_toml(data, tmp_path / "flower", rounds=50))
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    proc = subprocess.Popen([sys.executable, "-m", "ffm_private.cli", "flower", "local",
                             "--config", str(path), "--nodes", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen: list[str] = []
    pids: list[int] = []
    try:
        end = time.monotonic() + 180
        while time.monotonic() < end and not any("Successfully started run" in x for x in seen):
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
            pids += [int(p) for p in re.findall(r"\(pid (\d+)\)", seen[-1])]
        assert any("Successfully started run" in x for x in seen), "".join(seen)
        assert len(pids) == 4  # the SuperLink and three SuperNodes
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 130
        assert not [p for p in pids if alive(p)]
    finally:
        for pid in [proc.pid, *pids]:
            if alive(pid, wait=0):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def test_tls_and_supernode_authentication_with_flowers_own_options(tmp_path):
    """TLS on every connection and only registered SuperNode keys admitted: the run completes."""
    from ffm_private.flower.certs import write_test_certificates
    from ffm_private.flower.local import run_local

    data = write_csv(tmp_path / "ratings.csv", 3)
    path = tmp_path / "run.toml"
    path.write_text(tiny_toml(data, tmp_path / "flower", rounds=1, eval_every=1))
    tls = write_test_certificates(tmp_path / "certs", 3)
    out = io.StringIO()
    run_local(path, 3, timeout=480, round_timeout=240, out=out, tls=tls)
    rows = metrics(tmp_path / "flower")
    assert rows[0]["contributors"] == 3, out.getvalue()[-3000:]
    log = out.getvalue()
    assert "insecure" not in log.lower()


def test_secagg_run_survives_a_supernode_killed_mid_round(tmp_path):
    """One SuperNode is killed once it has answered the first SecAgg+ stage of round 1."""
    import signal
    import threading
    import time

    from ffm_private.flower.local import run_local

    data = write_csv(tmp_path / "ratings.csv", 5)
    path = tmp_path / "run.toml"
    path.write_text(tiny_toml(data, tmp_path / "flower", rounds=1, eval_every=1,
                              extra='[protocol]\nname = "secagg"\n'))
    victim_log = tmp_path / "flower.nodes" / "user-103" / "secagg" / "round-0001.json"
    killed = threading.Event()

    def kill_when_started(dep):
        victim = dep.processes[3]  # SuperLink, then SuperNodes for users 101, 102, 103, ...

        def watch():
            end = time.monotonic() + 400
            while time.monotonic() < end and not victim_log.exists():
                time.sleep(0.2)
            if victim_log.exists():
                os.killpg(victim.pid, signal.SIGKILL)
                killed.set()

        threading.Thread(target=watch, daemon=True).start()

    out = io.StringIO()
    run_local(path, 5, timeout=560, round_timeout=150, out=out, on_started=kill_when_started)
    assert killed.is_set(), out.getvalue()[-3000:]
    row = metrics(tmp_path / "flower")[0]
    assert row["aborted"] is None, out.getvalue()[-3000:]
    assert row["contributors"] == 4 and row["dropped"] == 1
