"""``ffm-private flower local``: a SuperLink and N SuperNodes on 127.0.0.1, then ``flwr run``.

Every process is started in its own session (process group) and every group is stopped in a
``finally``: on success, on failure and on Ctrl-C, so no SuperLink, SuperNode, ServerApp or
ClientApp process outlives the command. Node directories (each user's personal state) are
under ``<run_dir>.nodes/``; the run directory holds only what the server owns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ffm_private import config as config_mod
from ffm_private.config import Config
from ffm_private.flower.errors import FlowerDeploymentError

APP_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "ffm-private-flower"
version = "1.0.0"
description = "ffm-private on Flower: the run's ServerApp and ClientApp"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "ffm-private"

[tool.flwr.app.components]
serverapp = "ffm_private.flower.server_app:app"
clientapp = "ffm_private.flower.client_app:app"

[tool.flwr.app.config]
config = ""
resume = false
overwrite = false
min-nodes = 1
wait-s = 120.0
round-timeout-s = 300.0
"""

CONNECTION = "ffm-local"


@dataclass(frozen=True)
class Tls:
    """Flower's own TLS and SuperNode authentication files (see :mod:`.certs`)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    #: SuperNode private keys and their public keys (registered with the SuperLink), per node.
    node_keys: Sequence[Path] = ()
    node_public_keys: Sequence[Path] = ()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise FlowerDeploymentError(f"the SuperLink exited with code {proc.returncode} "
                                        "before listening")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise FlowerDeploymentError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def package_root() -> Path:
    """The directory holding ``ffm_private`` (put on the apps' PYTHONPATH)."""
    return Path(__file__).resolve().parents[2]


@dataclass
class LocalDeployment:
    """The processes of one local deployment; :meth:`stop` ends every one of them."""

    work: Path
    env: dict[str, str]
    port: int
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop)
        self.logs.append(log)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)
        self.processes.append(proc)
        return proc

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to every process group, SIGKILL to what is left after ``grace`` seconds."""
        for proc in self.processes:
            _signal_group(proc, signal.SIGTERM)
        end = time.monotonic() + grace
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, end - time.monotonic()))
        for proc in self.processes:
            _signal_group(proc, signal.SIGKILL)  # also the group's children still running
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        for log in self.logs:
            log.close()

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def node_users(cfg: Config, nodes: int, data_dir: Path) -> tuple[list[str], str]:
    """The dataset ids of the first ``nodes`` users, and the data path the nodes read."""
    from ffm_private.simulation import load_split

    split = load_split(cfg, data_dir)
    if nodes > split.n_users:
        raise config_mod.ConfigError(f"--nodes {nodes} exceeds the {split.n_users} users of "
                                     "the dataset (one user per SuperNode)")
    ids = ([str(u) for u in split.raw_user_ids] if split.raw_user_ids is not None
           else [str(u) for u in range(split.n_users)])
    data_path = cfg.data.path or str(data_dir / "data")
    return ids[:nodes], str(Path(data_path).resolve())


def run_local(config_path: str | Path, nodes: int, *, resume: bool = False,
              overwrite: bool = False, timeout: float = 3600.0, round_timeout: float = 300.0,
              tls: Tls | None = None, out: IO[str] | None = None,
              keep_work: bool = False, on_started: object | None = None) -> Path:
    """Run ``config_path`` on a local SuperLink with ``nodes`` SuperNodes; return the run dir.

    ``on_started(deployment)`` (tests) is called once every process is up.
    """
    out = out or sys.stdout
    import shutil

    absent = [t for t in ("flower-superlink", "flower-supernode", "flwr")
              if shutil.which(t) is None]
    if absent:
        raise FlowerDeploymentError(f"{', '.join(absent)} not found on PATH: install the flower "
                                    "extra (pip install -e '.[flower]', flwr==1.41.0)")
    if nodes < 1:
        raise config_mod.ConfigError(f"--nodes must be >= 1 (got {nodes})")
    cfg = config_mod.load(config_path)
    run_dir = Path(cfg.run_dir).resolve()
    data = dataclasses.replace(cfg.data, path=str(Path(cfg.data.path).resolve())
                               if cfg.data.path else "")
    cfg = dataclasses.replace(cfg, run_dir=str(run_dir), data=data)
    nodes_root = Path(str(run_dir) + ".nodes")
    nodes_root.mkdir(parents=True, exist_ok=True)
    users, data_path = node_users(cfg, nodes, nodes_root)
    work = Path(tempfile.mkdtemp(prefix="ffm-flower-"))
    (work / "app").mkdir()
    (work / "app" / "pyproject.toml").write_text(APP_PYPROJECT)
    (work / "run.toml").write_text(config_mod.to_toml(cfg))
    port = free_port()
    home = work / "home"
    home.mkdir()
    security = (f'root-certificates = "{tls.ca_cert}"\n' if tls is not None
                else "insecure = true\n")
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n'
                                      f'[superlink.{CONNECTION}]\n'
                                      f'address = "127.0.0.1:{port}"\n{security}')
    env = dict(os.environ)
    env["FLWR_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(package_root())] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    dep = LocalDeployment(work, env, port)
    try:
        link = ["flower-superlink", "--host", "127.0.0.1", "--port", str(port),
                "--disable-runtime-dependency-installation"]
        link += (["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.server_cert),
                  "--ssl-keyfile", str(tls.server_key)] if tls is not None else ["--insecure"])
        if tls is not None and tls.node_public_keys:
            link += ["--enable-supernode-auth"]
        superlink = dep.start("superlink", link)
        wait_port(port, 60.0, superlink)
        out.write(f"SuperLink on 127.0.0.1:{port} (pid {superlink.pid}); logs in {work}\n")
        if tls is not None and tls.node_public_keys:
            _register_nodes(dep, tls, len(users))
        for i, user in enumerate(users):
            node_dir = nodes_root / f"user-{user}"
            node_config = (f'user="{user}" node-dir="{node_dir}" data-path="{data_path}"')
            argv = ["flower-supernode", "--superlink", f"127.0.0.1:{port}",
                    "--port", str(free_port()), "--node-config", node_config,
                    "--max-wait-time", "120"]
            if tls is not None:
                argv += ["--root-certificates", str(tls.ca_cert)]
                if tls.node_keys:
                    argv += ["--auth-supernode-private-key", str(tls.node_keys[i])]
            else:
                argv += ["--insecure"]
            proc = dep.start(f"supernode-{i}", argv)
            out.write(f"SuperNode {i} for user {user} (pid {proc.pid}); node dir {node_dir}\n")
        if callable(on_started):
            on_started(dep)
        run_config = (f"config={_toml_str(work / 'run.toml')} resume={_toml_bool(resume)} "
                      f"overwrite={_toml_bool(overwrite)} min-nodes={nodes} "
                      f"round-timeout-s={float(round_timeout)}")
        flwr = subprocess.Popen(["flwr", "run", str(work / "app"), CONNECTION, "--stream",
                                 "--run-config", run_config], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        dep.processes.append(flwr)
        tail = _stream(flwr, out, timeout)
        if not (run_dir / "summary.json").exists():
            raise FlowerDeploymentError(f"the Flower run ended without writing "
                                        f"{run_dir / 'summary.json'}; the run's last output:\n"
                                        f"{tail}")
        return run_dir
    finally:
        dep.stop()
        out.write(f"stopped {len(dep.processes)} processes\n")
        out.flush()
        if not keep_work and (run_dir / "summary.json").exists():
            shutil.rmtree(work, ignore_errors=True)


def _register_nodes(dep: LocalDeployment, tls: Tls, count: int) -> None:
    """Register each SuperNode's public key with the SuperLink (Flower's node authentication)."""
    if len(tls.node_public_keys) < count or len(tls.node_keys) < count:
        raise FlowerDeploymentError(f"--tls: {count} SuperNodes need {count} key pairs, the "
                                    f"folder holds {len(tls.node_keys)}")
    for pub in tls.node_public_keys[:count]:
        done = subprocess.run(["flwr", "supernode", "register", str(pub), CONNECTION],
                              env=dep.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise FlowerDeploymentError(f"registering the SuperNode key {pub} failed: "
                                        f"{done.stdout[-500:]} {done.stderr[-500:]}")


def _stream(proc: subprocess.Popen, out: IO[str], timeout: float) -> str:
    """Copy the run's streamed log to ``out`` until it ends (a typed error past ``timeout``);
    return its last lines."""
    import collections
    import threading

    last: collections.deque[str] = collections.deque(maxlen=40)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            last.append(line)
            out.write(line)
            out.flush()

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlowerDeploymentError(f"the Flower run did not finish within {timeout:g} s") \
            from None
    t.join(timeout=5)
    return "".join(last)


def _toml_str(value: object) -> str:
    return "'" + str(value).replace("'", "") + "'"


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"


def shell_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
