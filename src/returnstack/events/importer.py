"""Bulk import of native events from JSONL or CSV: streamed, batched, resumable.

Memory stays flat: the file is read line by line and written in batches by a writer thread
(group commit, as POST /v1/events), at most a few batches ahead of the reader. A batch
commits alone or with the batches waiting with it. Event ids make a re-run import nothing
twice.
"""

import csv
import io
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, BinaryIO

import orjson

from returnstack.events.schemas import Trust
from returnstack.events.service import RecordResult, record_events
from returnstack.events.validation import ValidEvent, check_event
from returnstack.kit.db import Database
from returnstack.kit.groupcommit import GroupCommitter

BATCH_SIZE = 500
BATCHES_IN_FLIGHT = 2  # submitted to the writer, not yet answered

CSV_EVENT_COLUMNS = {
    "type": "type",
    "id": "id",
    "timestamp": "timestamp",
    "channel": "channel",
    "order_id": "order_id",
    "currency": "currency",
}
CSV_NESTED_COLUMNS = {
    "customer_id": ("customer", "id"),
    "customer_email": ("customer", "email"),
    "customer_name": ("customer", "name"),
    "store_id": ("store", "id"),
    "store_name": ("store", "name"),
    "store_city": ("store", "city"),
    "store_region": ("store", "region"),
    "store_country": ("store", "country"),
    "store_postal_code": ("store", "postal_code"),
    "refund_amount": ("refund", "amount"),
    "refund_method": ("refund", "method"),
}
CSV_ITEM_COLUMNS = (
    "line_id",
    "product_id",
    "variant_id",
    "quantity",
    "unit_price",
    "name",
    "category",
    "url",
    "reason",
    "note",
)
CSV_INTEGER_COLUMNS = {"quantity", "unit_price", "refund_amount"}
CSV_COLUMNS = (*CSV_EVENT_COLUMNS, *CSV_NESTED_COLUMNS, *CSV_ITEM_COLUMNS)


@dataclass
class LineError:
    line: int
    errors: list[dict[str, Any]]


@dataclass
class ImportReport:
    lines: int = 0
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    first_errors: list[LineError] = field(default_factory=list)  # the first 100, for --json

    def reject(self, error: LineError) -> None:
        self.rejected += 1
        if len(self.first_errors) < 100:
            self.first_errors.append(error)


def _decode_error(number: int, exc: UnicodeDecodeError) -> LineError:
    return LineError(number, [{"path": "", "message": f"not valid UTF-8: {exc.reason}"}])


def read_jsonl(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    # Byte lines: a line that is not UTF-8 is that line's error, not the whole file's.
    for number, line in enumerate(stream, start=1):
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
        if not line.strip():
            continue
        try:
            yield number, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, UnicodeDecodeError) else None
            if cause is not None:
                yield number, _decode_error(number, cause)
            else:
                yield number, LineError(number, [{"path": "", "message": f"not valid JSON: {exc}"}])


def _csv_cell(column: str, value: str) -> Any:
    digits = value.removeprefix("-")
    # ASCII digits only (int() refuses "²", which isdigit() accepts, and reads a fullwidth
    # "1" as 1), and not thousands of them (int() refuses those). The validator refuses the rest.
    if column in CSV_INTEGER_COLUMNS and digits.isascii() and digits.isdigit() and len(digits) < 40:
        return int(value)
    return value


def read_csv(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    """Rows with the same event id, one after another, form one event (one row per item)."""
    undecodable: list[LineError] = []

    def text_lines() -> Iterator[str]:
        for number, raw in enumerate(stream, start=1):
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                undecodable.append(_decode_error(number, exc))
                yield "\n"  # a blank row keeps the reader's line count right

    reader = csv.DictReader(text_lines())
    unknown = [name for name in reader.fieldnames or [] if name not in CSV_COLUMNS]
    if unknown:
        yield 1, LineError(1, [{"path": name, "message": "unknown column"} for name in unknown])
        return
    current: dict[str, Any] | None = None
    start = 0
    for row in reader:
        line = reader.line_num
        while undecodable:
            error = undecodable.pop(0)
            yield error.line, error
        cells = {
            k: v.strip() for k, v in row.items() if k is not None and v is not None and v.strip()
        }
        item = {k: _csv_cell(k, cells[k]) for k in CSV_ITEM_COLUMNS if k in cells}
        if current is not None and cells.get("id") == current.get("id"):
            current["items"].append(item)
            continue
        if current is not None:
            yield start, current
        start = line
        current = {CSV_EVENT_COLUMNS[k]: cells[k] for k in CSV_EVENT_COLUMNS if k in cells}
        for column, (parent, key) in CSV_NESTED_COLUMNS.items():
            if column in cells:
                current.setdefault(parent, {})[key] = _csv_cell(column, cells[column])
        current["items"] = [item]
    if current is not None:
        yield start, current
    for error in undecodable:
        yield error.line, error


def import_events(
    db: Database,
    stream: BinaryIO,
    *,
    tenant_id: str,
    default_currency: str,
    fmt: str,
    actor: str = "cli:import",
    on_progress: Callable[[], None] | None = None,
    on_error: Callable[[LineError], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    batch: list[ValidEvent] = []
    # The writer of POST /v1/events (group commit), in this process: it writes the batches
    # submitted while the next one is read and validated here (and those waiting together,
    # in one transaction); their results come back in order.
    writer = GroupCommitter(db, max_wait=300, queue_limit=BATCHES_IN_FLIGHT + 1, name="import")
    in_flight: deque[Future[RecordResult]] = deque()

    def collect(future: Future[RecordResult]) -> None:
        result = future.result()
        report.accepted += result.accepted
        report.duplicates += result.duplicates

    def flush() -> None:
        if not batch:
            return
        work = partial(
            record_events,
            tenant_id=tenant_id,
            default_currency=default_currency,
            events=list(batch),
            source="import",
            actor=actor,
            trust=Trust.verified,
        )
        in_flight.append(writer.submit(work, units=len(batch)).future)
        batch.clear()
        while len(in_flight) > BATCHES_IN_FLIGHT:
            collect(in_flight.popleft())

    records = read_jsonl(stream) if fmt == "jsonl" else read_csv(stream)
    try:
        for line, raw in records:
            report.lines = line
            if isinstance(raw, LineError):
                report.reject(raw)
                if on_error:
                    on_error(raw)
                continue
            report.events += 1
            checked = check_event(raw)
            if isinstance(checked, list):
                error = LineError(line, checked)
                report.reject(error)
                if on_error:
                    on_error(error)
            else:
                batch.append(checked)
                if len(batch) >= BATCH_SIZE:
                    flush()
            if on_progress:
                on_progress()
        flush()
        while in_flight:
            collect(in_flight.popleft())
    finally:
        writer.stop()  # what was submitted is written (or has failed) before this returns
    return report


class CountingReader(io.RawIOBase):
    """Counts the bytes read from a file, for a progress bar over a streamed text file."""

    def __init__(self, raw: io.RawIOBase | io.BufferedIOBase) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        read = self.raw.readinto(buffer) or 0
        self.count += read
        return read

    def close(self) -> None:
        self.raw.close()
        super().close()


def open_counted(path: str) -> tuple[BinaryIO, CountingReader]:
    """The file as a buffered byte stream, and a counter of the bytes read so far."""
    counter = CountingReader(open(path, "rb", buffering=0))  # noqa: SIM115  (closed by caller)
    return io.BufferedReader(counter), counter
