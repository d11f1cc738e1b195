"""Reading extracts: every row comes out with its own bytes; one bad row never takes others with it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from caselink.connectors.readers import MAX_ROW_BYTES, csv_header_bytes, parse_csv_row, read_csv, read_jsonl
from caselink.schemas.dead_letters import DEAD_LETTER_MAX_PAYLOAD, TRUNCATED_MARK, dead_letter


def _rows(path: Path, **kw):
    return [(r.number, r.data, r.raw, r.error) for r in read_csv(path, **kw)]


def test_an_unterminated_quote_costs_its_own_line_only(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'id,name\n1,"Ann\n2,Bob\n3,Cat\n')
    rows = list(read_csv(path))
    assert rows[0].data is None and rows[0].raw == b'1,"Ann\n'
    assert "unterminated" in (rows[0].error or "")
    assert [r.data for r in rows[1:]] == [{"id": "2", "name": "Bob"}, {"id": "3", "name": "Cat"}]
    assert [r.number for r in rows] == [1, 2, 3]


def test_a_stray_quote_closed_by_a_later_one_does_not_swallow_the_rows_between(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'id,name\n1,"Ann\n2,Bob\n3,O"Neil\n4,Dee\n')
    rows = list(read_csv(path))
    assert rows[0].data is None and rows[0].raw == b'1,"Ann\n'
    assert [r.data for r in rows[1:]] == [{"id": "2", "name": "Bob"}, {"id": "3", "name": 'O"Neil'},
                                          {"id": "4", "name": "Dee"}]


def test_a_quoted_field_over_lines_is_one_row_with_all_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'id,addr\r\n1,"4 Elm\r\nLeeds"\r\n2,x\r\n')
    rows = list(read_csv(path))
    assert rows[0].data == {"id": "1", "addr": "4 Elm\r\nLeeds"} and rows[0].raw == b'1,"4 Elm\r\nLeeds"\r\n'
    assert rows[1].data == {"id": "2", "addr": "x"}


def test_bad_rows_keep_their_exact_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'id,name\n1,Ren\xe9e\n2,a,b\n3,"x"y\n4,ok\n')
    rows = list(read_csv(path))
    assert [r.raw for r in rows] == [b"1,Ren\xe9e\n", b"2,a,b\n", b'3,"x"y\n', b"4,ok\n"]
    assert [r.data is None for r in rows] == [True, True, True, False]
    assert "not valid utf-8" in rows[0].error and "3 fields" in rows[1].error and "malformed CSV" in rows[2].error


def test_a_huge_field_is_a_dead_letter_holding_its_start_and_the_next_row_arrives(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    big = b"x" * (MAX_ROW_BYTES + 50_000)
    middle = b"y" * 200_000  # over csv's own 128 KiB field limit, under the row bound: a row like any other
    path.write_bytes(b"id,name\n1," + big + b"\n2," + middle + b"\n3,Bob\n")
    rows = list(read_csv(path))
    assert rows[0].data is None and rows[0].raw == (b"1," + big)[:MAX_ROW_BYTES]
    assert rows[0].length == MAX_ROW_BYTES + 50_003 and "exceeds" in rows[0].error
    assert rows[1].data == {"id": "2", "name": middle.decode()}
    assert rows[2].data == {"id": "3", "name": "Bob"}


def test_an_unterminated_quote_before_a_long_tail_gives_up_at_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    tail = b"".join(b"%d,name%d\n" % (i, i) for i in range(2, 120_000))  # > MAX_ROW_BYTES after the quote
    path.write_bytes(b'id,name\n1,"Ann\n' + tail)
    rows = list(read_csv(path))
    assert rows[0].data is None and rows[0].raw == b'1,"Ann\n' and "unterminated" in rows[0].error
    assert len(rows) == 120_000 - 1 and all(r.data for r in rows[1:])
    assert rows[-1].data == {"id": "119999", "name": "name119999"}


def test_skip_counts_dead_lettered_lines_as_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'id,name\n1,"Ann\n2,Bob\n3,Cat\n')
    assert [r.number for r in read_csv(path, skip=2)] == [3]


def test_an_unreadable_header_is_reported_with_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'id,"name\n')
    (row,) = list(read_csv(path))
    assert row.number == 0 and row.raw == b'id,"name\n' and "rows were not read" in row.error


def test_a_dead_lettered_csv_row_reads_again_under_its_header(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes('\ufeffid;name\n1;"Lee; Ann"\n'.encode())
    header = csv_header_bytes(path)
    assert header == b"id;name\n"
    row = next(iter(read_csv(path, delimiter=";")))
    assert parse_csv_row(header, row.raw, delimiter=";") == {"id": "1", "name": "Lee; Ann"}


def test_deeply_nested_json_is_a_dead_letter_and_the_next_line_arrives(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    nested = b"[" * 100_000 + b"\n"
    path.write_bytes(nested + b'{"id": 2}\n')
    rows = list(read_jsonl(path))
    assert rows[0].data is None and rows[0].raw == nested and "nested too deeply" in rows[0].error
    assert rows[1].data == {"id": 2} and rows[1].number == 2


def test_a_json_line_over_the_bound_keeps_its_start_and_length(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    long_line = b'{"id": "' + b"z" * (MAX_ROW_BYTES + 10) + b'"}\n'
    path.write_bytes(long_line + b'{"id": 2}\n')
    rows = list(read_jsonl(path))
    assert rows[0].raw == long_line[:MAX_ROW_BYTES] and rows[0].length == len(long_line)
    assert rows[1].data == {"id": 2}


def test_a_dead_letter_bounds_its_payload_and_says_so() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    letter = dead_letter("f.csv:row 1", "connector", ValueError("bad"), payload)
    assert letter["payload"] == payload[:DEAD_LETTER_MAX_PAYLOAD]
    assert TRUNCATED_MARK in letter["error"] and f"{len(payload):,} bytes" in letter["error"]
    assert hashlib.sha256(payload).hexdigest() in letter["error"]
    small = dead_letter("f.csv:row 2", "connector", ValueError("bad"), b"abc")
    assert small["payload"] == b"abc" and small["error"] == "bad"
    cut = dead_letter("f.csv:row 3", "connector", ValueError("bad"), b"abc", original_size=5_000_000)
    assert cut["payload"] == b"abc" and "of 5,000,000 bytes" in cut["error"]
