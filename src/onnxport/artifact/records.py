"""One way to write the export's records as JSON objects (``onnxport.json``, reports): ``Record.to_dict``.

A dataclass deriving from ``Record`` is written as its fields, recursively: nested dataclasses, mappings,
lists and tuples (as lists), anything else as it is. ``RECORD_KEYS`` names the keys when they are not just
the fields: a subset, an order, properties (``ALL_FIELDS`` stands for every field, in order).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

ALL_FIELDS = "*"


def to_record(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses as objects (their ``RECORD_KEYS``), sequences as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        record = {}
        for key in getattr(value, "RECORD_KEYS", (ALL_FIELDS,)):
            for name in [f.name for f in dataclasses.fields(value)] if key == ALL_FIELDS else [key]:
                record[name] = to_record(getattr(value, name))
        return record
    if isinstance(value, Mapping):
        return {key: to_record(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_record(item) for item in value]
    return value


class Record:
    """Base of the dataclasses ``onnxport.json`` and the reports store; ``to_dict`` is ``to_record(self)``."""

    RECORD_KEYS: tuple[str, ...] = (ALL_FIELDS,)

    def to_dict(self) -> dict[str, Any]:
        return to_record(self)
