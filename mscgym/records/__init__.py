"""Records: replayable JSON of one evaluated plan, and the tools that check them."""

from mscgym.records.record import (
    DEFAULT_TOLERANCES,
    SCHEMA,
    SCHEMA_VERSION,
    Record,
    RecordError,
    load_record,
    make_record,
)
from mscgym.records.replay import (
    ReplayResult,
    ValidationReport,
    ValidationRow,
    check_strategies,
    replay,
    task_from_record,
    validate,
)

__all__ = [
    "DEFAULT_TOLERANCES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Record",
    "RecordError",
    "ReplayResult",
    "ValidationReport",
    "ValidationRow",
    "check_strategies",
    "load_record",
    "make_record",
    "replay",
    "task_from_record",
    "validate",
]
