"""Reading CSV and JSONL extracts row by row, keeping each row's source bytes.

Every row comes out as a ``SourceRow``: its data, or why it could not be read, and always the
bytes it was read from, so a dead letter carries what actually failed and can be fixed and sent
again. Why this is more than ``csv.reader`` over the file:

* a quoted field that is never closed made ``csv.reader`` read on to the end of the file and
  report one error for all of it: every valid row after the stray quote was lost. Here the CSV
  parser is fed one physical line at a time through ``_Lines``, which knows which lines each
  record used; a record that fails after spanning several lines gives up only its first line (a
  dead letter) and the parser starts again on the line after it;
* a row is bounded (``MAX_ROW_BYTES``) while it is read, whatever its shape: one line too long, a
  quoted field that runs on, a JSON line nested deeper than the parser can follow;
* nothing is held beyond one row: files are streamed.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ROW_BYTES = 1_000_000  # a row (CSV record or JSON line) longer than this is a dead letter
# Kafka headers on a connector's dead letter: the file kind, and a CSV file's header line, so that
# `caselink dlq redrive --mapping` can read the row's bytes again.
SOURCE_KIND_HEADER = "caselink-source-kind"
SOURCE_HEADER_HEADER = "caselink-source-header"
_SURROGATES = re.compile("[\udc80-\udcff]")


@dataclass
class SourceRow:
    number: int  # 1-based data row (CSV header excluded; a dead-lettered line counts as one), or JSONL line
    raw: bytes  # the bytes the row was read from (at most MAX_ROW_BYTES of a longer one)
    data: dict[str, Any] | None
    error: str | None = None
    size: int = -1  # the row's whole length in bytes when ``raw`` holds only its start

    @property
    def length(self) -> int:
        return self.size if self.size >= 0 else len(self.raw)


def _decode_check(text: str, encoding: str) -> str | None:
    """Bytes the declared encoding could not decode were kept as lone surrogates; find them."""
    if text.isascii() or not _SURROGATES.search(text):
        return None
    return f"bytes that are not valid {encoding}"


class _RowTooLong(Exception):
    """A record over ``MAX_ROW_BYTES``: one physical line (``raw`` is its start) or several."""

    def __init__(self, raw: str | None, size: int) -> None:
        super().__init__(f"row of {size} or more characters exceeds {MAX_ROW_BYTES}")
        self.raw, self.size = raw, size


@dataclass
class _LongLine:
    """A physical line over the bound, met inside another record: its own dead letter when its turn comes."""

    raw: str
    size: int


class _Lines:
    """The file's physical lines for ``csv.reader``, remembering those the current record used.

    ``give_back`` puts lines in front again, so after a multi-line record fails the parser reads
    them once more, as records of their own. An iterator object rather than a generator because
    it must go on after signalling the end once (lines given back after the end of the file).
    """

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.pending: deque[str | _LongLine] = deque()
        self.used: list[str] = []
        self.used_chars = 0

    def __iter__(self) -> _Lines:
        return self

    def start_record(self) -> None:
        self.used, self.used_chars = [], 0

    def give_back(self, lines: list[str]) -> None:
        self.pending.extendleft(reversed(lines))

    def _read(self) -> str | _LongLine:
        line: str = self.handle.readline(MAX_ROW_BYTES + 1)
        if len(line) <= MAX_ROW_BYTES:
            return line
        start, size = line[:MAX_ROW_BYTES], len(line)  # one physical line too long: skip the rest of it
        while not line.endswith(("\n", "\r")):
            line = self.handle.readline(1 << 20)
            if not line:
                break
            size += len(line)
        return _LongLine(start, size)

    def __next__(self) -> str:
        line = self.pending.popleft() if self.pending else self._read()
        if isinstance(line, _LongLine):
            if self.used:  # inside a record: that record is over the bound; this line's turn comes next
                self.pending.appendleft(line)
                raise _RowTooLong(None, self.used_chars + line.size)
            raise _RowTooLong(line.raw, line.size)
        if not line:
            raise StopIteration
        self.used.append(line)
        self.used_chars += len(line)
        if self.used_chars > MAX_ROW_BYTES:  # a quoted field running on over many lines
            raise _RowTooLong(None, self.used_chars)
        return line


def read_csv(path: Path, delimiter: str = ",", encoding: str = "utf-8", skip: int = 0) -> Iterator[SourceRow]:
    """The data rows of a CSV file after the first ``skip``; see the module for how bad rows are kept."""
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    if csv.field_size_limit() < MAX_ROW_BYTES:
        csv.field_size_limit(MAX_ROW_BYTES)  # the row bound applies, not csv's 128 KiB per field

    def raw(lines: list[str]) -> bytes:
        return "".join(lines).encode("utf-8" if enc == "utf-8-sig" else encoding, "surrogateescape")

    with path.open("r", encoding=enc, errors="surrogateescape", newline="") as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        header: list[str] | None = None
        number = 0
        while True:
            lines.start_record()
            fields: list[str] | None = None
            problem, row_raw, size = "", b"", -1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except _RowTooLong as exc:
                if exc.raw is not None:  # one line over the bound
                    problem, row_raw, size = (f"line of {exc.size:,} characters exceeds {MAX_ROW_BYTES:,}",
                                              raw([exc.raw]), exc.size)
                else:
                    problem = (f"a quoted field still open after {exc.size:,} characters (the bound is "
                               f"{MAX_ROW_BYTES:,}): an unterminated quote? Only this line is dead-lettered; "
                               "the lines after it are read again as rows")
                    row_raw = raw(lines.used[:1])
                    lines.give_back(lines.used[1:])
            except csv.Error as exc:
                used = list(lines.used)
                row_raw = raw(used[:1])
                if len(used) > 1:  # give up only the record's first line; read the rest again
                    lines.give_back(used[1:])
                    problem = (f"malformed CSV: {exc}, in a record spanning {len(used)} lines (an unterminated "
                               "quote?); only this line is dead-lettered, the lines after it are read again as rows")
                else:
                    problem = f"malformed CSV: {exc}"
            if header is None:
                if fields is None:
                    yield SourceRow(0, row_raw, None, f"unreadable header ({problem}); the file's rows were not read",
                                    size=size)
                    return
                header = [h.strip() for h in fields]
                continue
            number += 1
            if number <= skip:
                continue
            if fields is None:
                yield SourceRow(number, row_raw, None, problem, size=size)
                continue
            if not fields or all(not f for f in fields):
                continue
            text = "".join(lines.used)
            row_bytes = raw(lines.used)
            problem = _decode_check(text, encoding) or ""
            if not problem and len(fields) != len(header):
                problem = f"{len(fields)} fields where the header has {len(header)}"
            if not problem and len(row_bytes) > MAX_ROW_BYTES:
                problem = f"row of {len(row_bytes):,} bytes exceeds {MAX_ROW_BYTES:,}"
            if problem:
                yield SourceRow(number, row_bytes, None, problem)
            else:
                yield SourceRow(number, row_bytes, dict(zip(header, fields, strict=True)))


def csv_header_bytes(path: Path, encoding: str = "utf-8") -> bytes:
    """The header line's bytes (of a header spanning lines, its first line), at most ``MAX_ROW_BYTES``."""
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    with path.open("r", encoding=enc, errors="surrogateescape", newline="") as handle:
        line = handle.readline(MAX_ROW_BYTES)
    return line.encode("utf-8" if enc == "utf-8-sig" else encoding, "surrogateescape")


def parse_csv_row(header: bytes, row: bytes, delimiter: str = ",", encoding: str = "utf-8") -> dict[str, str]:
    """One CSV row's bytes as a dict under the file's header line (for re-driving a dead letter).
    ValueError when they do not make one row with the header's fields."""
    enc = "utf-8" if encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig") else encoding
    try:
        text = header.decode(enc) + ("" if header.endswith((b"\n", b"\r")) else "\n") + row.decode(enc)
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"not a CSV row: {exc}") from None
    if len(records) != 2 or len(records[0]) != len(records[1]):
        raise ValueError(f"not one row of {len(records[0]) if records else 0} fields under the header")
    return dict(zip((h.strip() for h in records[0]), records[1], strict=True))


def read_jsonl(path: Path, encoding: str = "utf-8", skip: int = 0) -> Iterator[SourceRow]:
    """One JSON object per line; a line that is not one (or too long, or too deep) is a dead letter."""
    with path.open("rb") as handle:
        number = 0
        while True:
            line = handle.readline(MAX_ROW_BYTES + 1)
            if not line:
                return
            size = len(line)
            while len(line) > MAX_ROW_BYTES and not line.endswith(b"\n"):  # skip the rest, counting it
                more = handle.readline(1 << 20)
                if not more:
                    break
                size += len(more)
                if more.endswith(b"\n"):
                    break
            number += 1
            if number <= skip or not line.strip():
                continue
            if size > MAX_ROW_BYTES:
                yield SourceRow(number, line[:MAX_ROW_BYTES], None, f"line of {size:,} bytes exceeds {MAX_ROW_BYTES:,}",
                                size=size)
                continue
            try:
                data = json.loads(line.decode(encoding))
            except UnicodeDecodeError:
                yield SourceRow(number, line, None, f"bytes that are not valid {encoding}")
                continue
            except json.JSONDecodeError as exc:
                yield SourceRow(number, line, None, f"malformed JSON: {exc.msg} at column {exc.colno}")
                continue
            except RecursionError:
                yield SourceRow(number, line, None, "JSON nested too deeply to read")
                continue
            if not isinstance(data, dict):
                yield SourceRow(number, line, None, "a JSON object per line is required")
                continue
            yield SourceRow(number, line, data)
