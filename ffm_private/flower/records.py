"""Plain requests and replies <-> Flower records (the only place that knows the wire format).

A message's ``RecordDict`` holds one ``ArrayRecord`` per named group of arrays (``shared``,
``backbone``, ``update``) and one ``ConfigRecord`` named ``values`` with plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

VALUES = "values"


def to_record(arrays: Mapping[str, Mapping[str, np.ndarray]],
              values: Mapping[str, Any]) -> RecordDict:
    content: dict[str, Any] = {VALUES: ConfigRecord(dict(values))}
    for group, named in arrays.items():
        content[group] = ArrayRecord({k: Array(np.ascontiguousarray(v))
                                      for k, v in named.items()})
    return RecordDict(content)


def from_record(content: RecordDict) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    arrays = {group: {k: a.numpy() for k, a in rec.items()}
              for group, rec in content.array_records.items()}
    values = dict(content.config_records.get(VALUES, ConfigRecord()))
    return arrays, values


def payload_bytes(arrays: Mapping[str, Mapping[str, np.ndarray]],
                  values: Mapping[str, Any]) -> int:
    """Bytes of a message's arrays and values (Flower's framing not counted)."""
    return (sum(int(np.asarray(a).nbytes) for group in arrays.values() for a in group.values())
            + sum(len(str(k)) + len(str(v)) for k, v in values.items()))
