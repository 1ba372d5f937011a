"""The observation log: exactly what each party saw during training, for leakage audits.

Attacks (``attacks/``) read only this log and the run's released artefacts, never training
internals. Per recorded round the log keeps:

- ``broadcast``: the global shared state sent to every sampled client (and, in a deployment,
  visible to anyone who obtains the model); ``after``: the state the server held after the
  round, i.e. the next broadcast (``after - broadcast`` is what the public learns of a round);
- who took part: ``sampled``, ``contributors``, ``dropped``, ``rejected`` (the server sees it);
- what the server saw of the updates: each contributor's vector when the protocol reveals
  individual updates (``RoundOutcome.individual``: plaintext), else only ``total`` (the sum the
  server learned: secagg, he). Under DP these are whatever the lead's aggregation hands the
  server (clipped and/or noised), by the contract of :class:`~ffm_private.server.RoundOutcome`.

Layout (``<run_dir>/observations/``)::

    manifest.json     format, protocol, shared-parameter spec, what is recorded, size bound
    round-NNNN.npz    one file per recorded round, written atomically (temp file + rename)
    released.npz      the final global shared state (the released model)

One file per round makes recording idempotent: a round replayed after a crash or ``--resume``
rewrites its own file (with identical content, since every random choice is seeded), so the
log never holds a round twice, and :meth:`ObservationRecorder.truncate_after` drops rounds past
the checkpoint a resumed run restarts from.

Cost: a recorded round takes at most :func:`round_bytes_bound` bytes: ``16 P`` for the two
shared states (float32) and the total (float64), plus ``k * P * s`` for ``k <=
observation.max_clients`` client vectors stored with ``s`` bytes per value (4 for float32, 2 for
float16; a sparse layout is used instead when it is smaller, as for FedMF updates that touch few
item rows), plus ids and a fixed overhead. ``P`` is the number of shared parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ffm_private.config import ObservationConfig
from ffm_private.errors import FFMPrivateError
from ffm_private.models import SharedSpec
from ffm_private.storage import atomic_write_json, load_arrays, save_arrays

FORMAT_VERSION = 1
DIRNAME = "observations"
MANIFEST = "manifest.json"
RELEASED = "released.npz"
_ROUND_GLOB = "round-*.npz"
_SELECT_TAG = 0x0B5E
#: Bytes a round file may take beyond its arrays: zip headers and the small JSON metadata.
ROUND_OVERHEAD_BYTES = 16_384
_MAX_MESSAGE = 500
_ITEMSIZE = {"float32": 4, "float16": 2}


class ObservationLogError(FFMPrivateError, RuntimeError):
    """The observation log is missing, malformed, or does not match what is asked of it."""


def round_file(directory: Path, round_id: int) -> Path:
    return directory / f"round-{round_id:04d}.npz"


def resolve_rounds(rounds: Sequence[int], total_rounds: int) -> list[int]:
    """The recorded rounds in ``1..total_rounds``: negative entries count from the end."""
    out = set()
    for r in rounds:
        value = total_rounds + 1 + r if r < 0 else r
        if 1 <= value <= total_rounds:
            out.add(int(value))
    return sorted(out)


def round_bytes_bound(n_params: int, n_sampled: int, n_logged: int,
                      dtype: str = "float32") -> int:
    """Upper bound on the bytes of one recorded round (see the module docstring)."""
    itemsize = _ITEMSIZE[dtype]
    states = 4 * n_params * 2 + 8 * n_params           # broadcast, after (float32); total (f64)
    vectors = n_logged * n_params * max(itemsize, 4) if dtype == "float16" else \
        n_logged * n_params * itemsize                  # a float16 overflow falls back to f32
    ids = 8 * (4 * n_sampled + 2 * n_logged + 1)        # id arrays, sparse offsets
    return states + vectors + ids + ROUND_OVERHEAD_BYTES


def selection_keys(seed: int, clients: Sequence[int]) -> np.ndarray:
    """A keyed hash per client: the ``k`` smallest keys are the recorded clients.

    The same clients win every round they take part in, which is what linkage audits need.
    """
    return np.array([int(np.random.SeedSequence([seed, int(c), _SELECT_TAG]).generate_state(1)[0])
                     for c in clients], dtype=np.uint64)


def select_clients(seed: int, clients: Sequence[int], k: int) -> list[int]:
    """The (at most ``k``) recorded clients among ``clients``, sorted."""
    clients = [int(c) for c in clients]
    if k <= 0 or not clients:
        return []
    if len(clients) <= k:
        return sorted(clients)
    keys = selection_keys(seed, clients)
    order = np.argsort(keys, kind="stable")[:k]
    return sorted(clients[i] for i in order)


# -- what one round looked like ------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RoundObservation:
    """What the parties saw in one round.

    ``individual`` maps recorded client ids to their vectors (float32) when the protocol
    revealed individual updates, and is ``None`` when it did not (the server saw only
    ``total``). Vectors are decoded lazily from ``_encoded`` when the log was read from disk.
    """

    round_id: int
    broadcast: np.ndarray
    after: np.ndarray | None
    sampled: np.ndarray
    contributors: np.ndarray
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rejected: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    applied: bool = True
    aborted: str | None = None
    total: np.ndarray | None = None
    reveals_individual: bool = True
    dtype: str = "float32"
    _ids: np.ndarray | None = None
    _encoded: Mapping[str, np.ndarray] | None = None
    _dense: Mapping[int, np.ndarray] | None = None

    @property
    def client_ids(self) -> list[int]:
        """Ids whose individual vectors were recorded (empty when the server saw only sums)."""
        if self._dense is not None:
            return sorted(self._dense)
        return [] if self._ids is None else [int(c) for c in self._ids]

    @property
    def has_individual(self) -> bool:
        return bool(self.client_ids)

    def vector(self, client: int) -> np.ndarray:
        """The recorded vector of ``client`` (float32)."""
        if self._dense is not None:
            if client not in self._dense:
                raise KeyError(f"round {self.round_id}: no recorded vector for client {client}")
            return np.asarray(self._dense[client], dtype=np.float32)
        ids = self.client_ids
        try:
            row = ids.index(int(client))
        except ValueError:
            raise KeyError(f"round {self.round_id}: no recorded vector for client "
                           f"{client}") from None
        enc = self._encoded or {}
        n = self.broadcast.shape[0]
        if "updates" in enc:
            return enc["updates"][row].astype(np.float32)
        offsets, index, value = enc["upd_offsets"], enc["upd_index"], enc["upd_value"]
        out = np.zeros(n, dtype=np.float32)
        lo, hi = int(offsets[row]), int(offsets[row + 1])
        out[index[lo:hi]] = value[lo:hi]
        return out

    def vectors(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(client, vector)`` for every recorded client, decoded one at a time."""
        for cid in self.client_ids:
            yield cid, self.vector(cid)

    @property
    def individual(self) -> dict[int, np.ndarray] | None:
        """Every recorded vector at once (memory: clients x P floats), or ``None``."""
        if not self.reveals_individual:
            return None
        return dict(self.vectors())

    @property
    def public_delta(self) -> np.ndarray | None:
        """What anyone who sees the models learns of this round: ``after - broadcast``."""
        if self.after is None:
            return None
        return self.after.astype(np.float64) - self.broadcast.astype(np.float64)

    def with_individual(self, vectors: Mapping[int, np.ndarray],
                        total: np.ndarray | None = None) -> RoundObservation:
        """A copy whose recorded vectors (and total) are replaced: for what-if audits."""
        dense = {int(c): np.asarray(v, dtype=np.float32) for c, v in vectors.items()}
        if total is None and dense:
            total = np.sum([v.astype(np.float64) for v in dense.values()], axis=0)
        return replace(self, _dense=dense, _ids=None, _encoded=None, total=total,
                       reveals_individual=True)

    def without_individual(self) -> RoundObservation:
        """A copy in which the server saw only the total (what secagg or he reveal)."""
        return replace(self, _dense=None, _ids=None, _encoded=None, reveals_individual=False)


def _encode_vectors(vectors: Sequence[np.ndarray], dtype: str) -> tuple[dict[str, np.ndarray], str]:
    """Dense ``(k, P)`` or sparse (offsets, index, value) arrays, whichever is smaller.

    Built one vector at a time, so memory stays at the stored size (not ``k x P`` float64).
    """
    if dtype == "float16" and any(np.max(np.abs(v), initial=0.0) > np.finfo(np.float16).max
                                  for v in vectors):
        dtype = "float32"
    itemsize = _ITEMSIZE[dtype]
    n = int(np.asarray(vectors[0]).shape[0])
    nnz = sum(int(np.count_nonzero(np.asarray(v).astype(dtype))) for v in vectors)
    sparse_bytes = nnz * (4 + itemsize) + 8 * (len(vectors) + 1)
    if n < 2**31 and sparse_bytes < len(vectors) * n * itemsize:
        offsets = np.zeros(len(vectors) + 1, dtype=np.int64)
        index = np.empty(nnz, dtype=np.int32)
        value = np.empty(nnz, dtype=dtype)
        for row, v in enumerate(vectors):
            cast = np.asarray(v).astype(dtype)
            cols = np.flatnonzero(cast)
            lo = offsets[row]
            offsets[row + 1] = lo + cols.size
            index[lo:lo + cols.size] = cols
            value[lo:lo + cols.size] = cast[cols]
        return {"upd_offsets": offsets, "upd_index": index, "upd_value": value}, dtype
    dense = np.empty((len(vectors), n), dtype=dtype)
    for row, v in enumerate(vectors):
        dense[row] = np.asarray(v).astype(dtype)
    return {"updates": dense}, dtype


def _meta_array(meta: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)


# -- writing ---------------------------------------------------------------------------------------
class ObservationRecorder:
    """Writes the observation log during training, one atomic file per recorded round."""

    def __init__(self, run_dir: str | Path, cfg: ObservationConfig, spec: SharedSpec, *,
                 protocol: str, reveals_individual: bool, total_rounds: int, seed: int,
                 extra: Mapping[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.spec = spec
        self.dir = Path(run_dir) / DIRNAME
        self.seed = seed
        self.reveals_individual = reveals_individual
        self.total_rounds = total_rounds
        self.rounds = resolve_rounds(cfg.rounds, total_rounds) if cfg.enabled else []
        if not cfg.enabled:
            return
        manifest = {
            "format_version": FORMAT_VERSION,
            "protocol": protocol,
            "reveals_individual": bool(reveals_individual),
            "spec": {"names": list(spec.names), "shapes": [list(s) for s in spec.shapes]},
            "n_params": spec.size,
            "rounds": self.rounds,
            "total_rounds": total_rounds,
            "max_clients": cfg.max_clients,
            "dtype": cfg.dtype,
            "selection": "the max_clients contributors with the smallest keyed hash of "
                         "(seed, client), the same clients every round",
            "round_bytes_bound": "16 P + k P s + 8 (4 n + 2 k + 1) + "
                                 f"{ROUND_OVERHEAD_BYTES} (P shared parameters, k recorded "
                                 "clients, s bytes per stored value, n sampled clients)",
            **(dict(extra) if extra else {}),
        }
        atomic_write_json(self.dir / MANIFEST, manifest)

    def wants(self, round_id: int) -> bool:
        return round_id in self.rounds

    def record(self, round_id: int, broadcast: Mapping[str, np.ndarray] | np.ndarray,
               sampled: Sequence[int], outcome: Any,
               after: Mapping[str, np.ndarray] | np.ndarray | None) -> Path | None:
        """Record one round if configured; ``outcome`` is a :class:`RoundOutcome`."""
        if not self.wants(round_id):
            return None
        individual = outcome.individual if self.reveals_individual else None
        logged = select_clients(self.seed, list(individual) if individual else [],
                                self.cfg.max_clients)
        arrays: dict[str, np.ndarray] = {
            "broadcast": self._flat(broadcast).astype(np.float32),
            "sampled": np.asarray(sorted(int(c) for c in sampled), dtype=np.int64),
            "contributors": np.asarray(outcome.contributors, dtype=np.int64),
            "dropped": np.asarray(outcome.dropped, dtype=np.int64),
            "rejected": np.asarray(sorted(int(c) for c in outcome.rejected), dtype=np.int64),
            "logged": np.asarray(logged, dtype=np.int64),
        }
        if after is not None:
            arrays["after"] = self._flat(after).astype(np.float32)
        if outcome.total is not None:
            arrays["total"] = np.asarray(outcome.total, dtype=np.float64)
        dtype = self.cfg.dtype
        if logged:
            encoded, dtype = _encode_vectors([individual[c] for c in logged], dtype)
            arrays.update(encoded)
        aborted = outcome.aborted[:_MAX_MESSAGE] if outcome.aborted else None
        arrays["meta"] = _meta_array({
            "round": round_id, "applied": bool(outcome.applied), "aborted": aborted,
            "reveals_individual": bool(self.reveals_individual and individual is not None),
            "dtype": dtype})
        path = round_file(self.dir, round_id)
        save_arrays(path, arrays)
        return path

    def truncate_after(self, round_id: int) -> None:
        """Drop recorded rounds past ``round_id`` (a resumed run redoes them)."""
        if not self.dir.exists():
            return
        for path in self.dir.glob(_ROUND_GLOB):
            if int(path.stem.split("-")[1]) > round_id:
                path.unlink()
        if round_id < self.total_rounds:
            (self.dir / RELEASED).unlink(missing_ok=True)

    def release(self, shared: Mapping[str, np.ndarray] | np.ndarray, round_id: int) -> None:
        """Record the final global shared state: the released model."""
        if self.cfg.enabled:
            save_arrays(self.dir / RELEASED, {"shared": self._flat(shared).astype(np.float32),
                                              "round": np.int64(round_id)})

    def _flat(self, state: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        if isinstance(state, np.ndarray):
            return state
        return self.spec.flatten(state)


# -- reading ---------------------------------------------------------------------------------------
class ObservationLog:
    """Read access to a run's observation log (or an in-memory one built for what-if audits)."""

    def __init__(self, manifest: Mapping[str, Any], rounds: Mapping[int, RoundObservation] | None,
                 released: np.ndarray | None = None, directory: Path | None = None) -> None:
        self.manifest = dict(manifest)
        self.directory = directory
        self._rounds = dict(rounds) if rounds is not None else None
        self._cache: dict[int, RoundObservation] = {}
        self._released = released
        spec = self.manifest.get("spec")
        if not spec:
            raise ObservationLogError("observation manifest lacks the shared-parameter spec")
        self.spec = SharedSpec(tuple(spec["names"]), tuple(tuple(s) for s in spec["shapes"]))

    @classmethod
    def open(cls, path: str | Path) -> ObservationLog:
        """Open ``<run_dir>/observations`` (or the directory itself)."""
        path = Path(path)
        directory = path if (path / MANIFEST).exists() else path / DIRNAME
        manifest_path = directory / MANIFEST
        if not manifest_path.exists():
            raise ObservationLogError(
                f"{directory}: no observation log (was the run trained with observation.enabled "
                "= false, or before observation logging existed?)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ObservationLogError(f"{manifest_path}: format_version "
                                      f"{manifest.get('format_version')} is not {FORMAT_VERSION}")
        released = None
        if (directory / RELEASED).exists():
            released = load_arrays(directory / RELEASED)["shared"]
        return cls(manifest, None, released, directory)

    @property
    def protocol(self) -> str:
        return str(self.manifest.get("protocol", "?"))

    @property
    def n_params(self) -> int:
        return self.spec.size

    @property
    def released(self) -> np.ndarray | None:
        """The final global shared state, if the run finished (float32)."""
        return self._released

    @property
    def rounds(self) -> list[int]:
        """Recorded round ids, ascending."""
        if self._rounds is not None:
            return sorted(self._rounds)
        assert self.directory is not None
        return sorted(int(p.stem.split("-")[1]) for p in self.directory.glob(_ROUND_GLOB))

    def __getitem__(self, round_id: int) -> RoundObservation:
        if self._rounds is not None:
            return self._rounds[round_id]
        if round_id not in self._cache:
            assert self.directory is not None
            path = round_file(self.directory, round_id)
            if not path.exists():
                raise KeyError(f"round {round_id} is not in the observation log {self.directory}")
            self._cache[round_id] = _read_round(path)
        return self._cache[round_id]

    def __iter__(self) -> Iterator[RoundObservation]:
        for r in self.rounds:
            yield self[r]

    def with_rounds(self, rounds: Mapping[int, RoundObservation],
                    **manifest: Any) -> ObservationLog:
        """An in-memory log with the given rounds (and manifest fields overridden)."""
        return ObservationLog({**self.manifest, **manifest}, rounds, self._released)

    def bytes_on_disk(self) -> int:
        if self.directory is None:
            return 0
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())


def _read_round(path: Path) -> RoundObservation:
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (KeyError, ValueError) as err:
        raise ObservationLogError(f"{path}: unreadable metadata ({err})") from None
    encoded = {k: arrays[k] for k in ("updates", "upd_offsets", "upd_index", "upd_value")
               if k in arrays}
    return RoundObservation(
        round_id=int(meta["round"]), broadcast=arrays["broadcast"], after=arrays.get("after"),
        sampled=arrays["sampled"], contributors=arrays["contributors"],
        dropped=arrays["dropped"], rejected=arrays["rejected"], applied=bool(meta["applied"]),
        aborted=meta.get("aborted"), total=arrays.get("total"),
        reveals_individual=bool(meta["reveals_individual"]), dtype=str(meta["dtype"]),
        _ids=arrays["logged"], _encoded=encoded)


__all__ = [
    "DIRNAME", "FORMAT_VERSION", "ObservationLog", "ObservationLogError", "ObservationRecorder",
    "RoundObservation", "resolve_rounds", "round_bytes_bound", "select_clients",
]
