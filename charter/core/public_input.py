"""Public input for a collective constitution: statements and votes as a vote matrix. Pure.

Collective Constitutional AI (Huang et al. 2024) had about 1,000 people write statements on
Polis and vote agree, disagree or pass on each other's. The analysis
(:mod:`charter.core.collective`) needs that as a participants x statements matrix in which
*not having voted* differs from *passing*: a pass is an opinion (0), a statement never seen
is no data (NaN), and counting it as either would move the consensus.

Three shapes are read, from text or bytes (nothing here opens a file or a socket):

- **votes CSV** ``participant,statement,vote`` with a **statements CSV** ``statement,text``
  (optionally ``author``). A vote is ``1``/``-1``/``0`` or ``agree``/``disagree``/``pass``,
  in any case.
- **JSON** ``{"statements": [{"id", "text", "author"?}], "votes": [{"participant",
  "statement", "vote"}]}``; ids may be strings or integers, votes as in the CSV.
- **a Polis export**: its ``comments.csv`` (``comment-id``, ``comment-body``, optionally
  ``author-id`` and ``moderated``, where -1 means moderated out: the comment and its votes
  are left out) and its ``participants-votes.csv`` (``participant``, the metadata columns
  ``group-id``, ``n-comments``, ``n-votes``, ``n-agree``, ``n-disagree``, then one column
  per comment, named by its id or, in newer exports, ``comment-<id>``; a cell is 1, -1, 0,
  or empty when the participant never saw the comment).

The same population gives the same :class:`PublicInput` in every shape: statements in
their file order, participants in order of their first counted vote (someone whose votes
all fell on moderated-out comments is no participant).

Nothing half-parsed is returned: every problem found (up to :data:`MAX_ERRORS`) is
reported at once in one :class:`PublicInputError`, so a contributor fixes a file in one go.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_STATEMENTS = 10_000
MAX_PARTICIPANTS = 100_000
MAX_ERRORS = 100

POLIS_METADATA_COLUMNS = frozenset(
    {"participant", "group-id", "n-comments", "n-votes", "n-agree", "n-disagree"}
)
"""Columns of ``participants-votes.csv`` that are about the participant, not a comment."""

_VOTE_WORDS = {"agree": 1.0, "disagree": -1.0, "pass": 0.0}


@dataclass(frozen=True)
class Statement:
    id: str
    text: str
    author: str | None = None


@dataclass(frozen=True, eq=False)
class PublicInput:
    """Who voted what: ``votes[i, j]`` is participant i's vote on statement j, +1 agree,
    -1 disagree, 0 pass, NaN not voted. The matrix is a read-only copy."""

    statements: tuple[Statement, ...]
    participants: tuple[str, ...]
    votes: np.ndarray

    def __post_init__(self) -> None:
        votes = np.array(self.votes, dtype=float)
        if votes.shape != (len(self.participants), len(self.statements)):
            raise ValueError(
                f"votes has shape {votes.shape}, expected "
                f"({len(self.participants)}, {len(self.statements)})"
            )
        cast = votes[~np.isnan(votes)]
        if not np.isin(cast, (-1.0, 0.0, 1.0)).all():
            raise ValueError("votes must be +1, -1, 0 or NaN")
        votes.flags.writeable = False
        object.__setattr__(self, "votes", votes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicInput):
            return NotImplemented
        return (
            self.statements == other.statements
            and self.participants == other.participants
            and np.array_equal(self.votes, other.votes, equal_nan=True)
        )


@dataclass(frozen=True)
class RowError:
    """One problem, where it is. ``source`` names the input (``statements``, ``votes``,
    ``comments``, ``participants-votes``, ``json``). In a CSV ``line`` is the 1-based line
    where the record starts, the header being line 1; in JSON it is the entry's 1-based
    position in its list (source ``statements`` or ``votes``), or for the document as a
    whole (source ``json``) the line of the text at fault. ``column`` is the column or
    field name, None when no single one is at fault."""

    source: str
    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source} line {self.line}"
        if self.column is not None:
            where += f", column {self.column!r}"
        return f"{where}: {self.message}"


class PublicInputError(ValueError):
    """The public input cannot be read; ``errors`` lists every problem found (``line`` and
    ``column`` are the first one's), ``truncated`` whether there were more than listed."""

    def __init__(self, errors: Sequence[RowError], *, truncated: bool = False) -> None:
        self.errors = list(errors)
        self.truncated = truncated
        self.line = self.errors[0].line
        self.column = self.errors[0].column
        count = f"{len(self.errors)}{'+' if truncated else ''}"
        shown = "; ".join(str(e) for e in self.errors[:5])
        more = "; ..." if len(self.errors) > 5 or truncated else ""
        super().__init__(f"{count} problem(s) in the public input: {shown}{more}")


@dataclass
class _Problems:
    """Collects problems up to MAX_ERRORS: one report instead of a fix-rerun loop."""

    errors: list[RowError] = field(default_factory=list)
    truncated: bool = False

    def add(self, source: str, line: int, column: str | None, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(RowError(source, line, column, message))
        else:
            self.truncated = True

    def check(self) -> None:
        """Raise every problem, by input and then by line (they are found in passes)."""
        if self.errors:
            sources = list(dict.fromkeys(e.source for e in self.errors))
            ordered = sorted(self.errors, key=lambda e: (sources.index(e.source), e.line))
            raise PublicInputError(ordered, truncated=self.truncated)


@dataclass(frozen=True)
class _Vote:
    participant: str
    statement: str
    value: float
    source: str
    line: int
    column: str


@dataclass
class _Statements:
    """Statements read so far. ``dropped`` holds the ids of rows rejected or moderated
    out: votes on them are skipped, not reported a second time as on unknown statements."""

    source: str
    kept: list[Statement] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    full: bool = False

    def known(self, statement_id: str) -> bool:
        return statement_id in self.lines or statement_id in self.dropped


# ----------------------------------------------------------------------------- cells


def parse_vote(raw: object) -> float | None:
    """+1, -1 or 0 from a cell or JSON value; None when it is none of them."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        word = raw.strip().lower()
        if word in _VOTE_WORDS:
            return _VOTE_WORDS[word]
        try:
            value = float(word)
        except ValueError:
            return None
    else:
        return None
    return value if value in (-1.0, 0.0, 1.0) else None


def _json_id(raw: object) -> str | None:
    """An id from JSON: a string or an integer (Polis ids are numbers); None otherwise."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    return None


def _decode(data: str | bytes, source: str, problems: _Problems) -> str | None:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        problems.add(source, line, None, f"not UTF-8 text (byte {e.start})")
        return None


# ----------------------------------------------------------------------------- CSV


@dataclass(frozen=True)
class _Table:
    header: list[str]
    rows: list[tuple[int, dict[str, str]]]
    """(line, cells by column) for each complete record."""


def _read_csv(
    data: str | bytes, source: str, required: Sequence[str], problems: _Problems
) -> _Table | None:
    """The records of a CSV with a header; ragged records are reported and skipped. None
    when the file cannot be used at all (not text, unreadable, required columns missing)."""
    text = _decode(data, source, problems)
    if text is None:
        return None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue  # blank lines and spreadsheets' trailing ",,,"
            if header is None:
                header = [c.strip() for c in cells]
                if not _check_header(header, source, line, required, problems):
                    return None
                continue
            if len(cells) != len(header):
                column = header[len(cells)] if len(cells) < len(header) else None
                problems.add(
                    source,
                    line,
                    column,
                    f"{len(cells)} fields where the header has {len(header)}",
                )
                continue
            rows.append((line, dict(zip(header, cells, strict=True))))
    except csv.Error as e:
        problems.add(source, reader.line_num, None, f"unreadable CSV: {e}")
        return None
    if header is None:
        for name in required:
            problems.add(source, 1, name, "missing required column (the file is empty)")
        return None
    return _Table(header, rows)


def _check_header(
    header: list[str], source: str, line: int, required: Sequence[str], problems: _Problems
) -> bool:
    ok = True
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.add(source, line, name, "column appears twice in the header")
            ok = False
        seen.add(name)
    for name in required:
        if name not in seen:
            problems.add(source, line, name, "missing required column")
            ok = False
    return ok


# ----------------------------------------------------------------------------- rows


def _add_statement(
    into: _Statements,
    line: int,
    raw_id: str | None,
    text: object,
    author: object,
    columns: tuple[str, str, str],
    problems: _Problems,
) -> None:
    """Check one statement row and keep it; ``columns`` names its id, text and author."""
    id_column, text_column, author_column = columns
    source = into.source
    if into.full:
        return
    if raw_id is None:
        problems.add(source, line, id_column, "empty or invalid statement id")
        return
    if raw_id in into.lines:
        problems.add(
            source,
            line,
            id_column,
            f"statement {raw_id!r} already defined at line {into.lines[raw_id]}",
        )
        return
    bad = False
    if not isinstance(text, str) or not text.strip():
        problems.add(source, line, text_column, f"statement {raw_id!r} has no text")
        bad = True
    if author is not None and not isinstance(author, str | int):
        problems.add(source, line, author_column, "author must be a string")
        bad = True
    if bad or not isinstance(text, str):
        into.dropped.add(raw_id)
        return
    if len(into.kept) == MAX_STATEMENTS:
        problems.add(source, line, id_column, f"more than {MAX_STATEMENTS:,} statements")
        into.full = True
        return
    into.lines[raw_id] = line
    name = str(author).strip() if author is not None else ""
    into.kept.append(Statement(raw_id, text.strip(), name or None))


def _vote(
    participant: str | None,
    statement: str | None,
    raw: object,
    where: tuple[str, int],
    vote_column: str,
    problems: _Problems,
) -> _Vote | None:
    """One checked vote of the long formats (CSV and JSON); ``where`` is (source, line)."""
    source, line = where
    value = parse_vote(raw)
    if participant is None:
        problems.add(source, line, "participant", "empty or invalid participant id")
    if statement is None:
        problems.add(source, line, "statement", "empty or invalid statement id")
    if value is None:
        problems.add(source, line, vote_column, _unknown_vote(raw))
    if participant is None or statement is None or value is None:
        return None
    return _Vote(participant, statement, value, source, line, vote_column)


def _unknown_vote(raw: object) -> str:
    return f"unknown vote {raw!r} (use 1/-1/0 or agree/disagree/pass)"


def _cell_id(raw: str | None) -> str | None:
    return (raw or "").strip() or None


# ----------------------------------------------------------------------------- matrix


def _assemble(statements: _Statements, votes: Iterable[_Vote], problems: _Problems) -> PublicInput:
    """The matrix from checked statements and votes, or every problem found."""
    if not statements.kept:
        problems.add(statements.source, 1, None, "no statements")
    column = {s.id: j for j, s in enumerate(statements.kept)}
    participants: dict[str, int] = {}
    cells: dict[tuple[int, int], _Vote] = {}
    for vote in votes:
        if vote.statement not in column:
            if not statements.known(vote.statement) and not statements.full:
                problems.add(
                    vote.source,
                    vote.line,
                    "statement",
                    f"vote on unknown statement {vote.statement!r}",
                )
            continue  # else its statement was rejected or moderated out: reported or meant
        row = participants.get(vote.participant)
        if row is None:
            if len(participants) == MAX_PARTICIPANTS:
                problems.add(
                    vote.source,
                    vote.line,
                    "participant",
                    f"more than {MAX_PARTICIPANTS:,} participants",
                )
                break
            row = participants[vote.participant] = len(participants)
        key = (row, column[vote.statement])
        earlier = cells.setdefault(key, vote)
        if earlier.value != vote.value:
            problems.add(
                vote.source,
                vote.line,
                vote.column,
                f"participant {vote.participant!r} already voted {earlier.value:+g} on "
                f"statement {vote.statement!r} at line {earlier.line}",
            )
    problems.check()
    matrix = np.full((len(participants), len(column)), np.nan)
    for (i, j), vote in cells.items():
        matrix[i, j] = vote.value
    return PublicInput(tuple(statements.kept), tuple(participants), matrix)


# ----------------------------------------------------------------------------- formats


def parse_votes_csv(votes: str | bytes, statements: str | bytes) -> PublicInput:
    """A votes CSV (``participant,statement,vote``) and its statements CSV
    (``statement,text``, optionally ``author``)."""
    problems = _Problems()
    found = _Statements("statements")
    table = _read_csv(statements, "statements", ("statement", "text"), problems)
    for line, row in table.rows if table else ():
        _add_statement(
            found,
            line,
            _cell_id(row["statement"]),
            row["text"],
            row.get("author") or None,
            ("statement", "text", "author"),
            problems,
        )
    vote_table = _read_csv(votes, "votes", ("participant", "statement", "vote"), problems)
    checked = []
    for line, row in vote_table.rows if vote_table else ():
        vote = _vote(
            _cell_id(row["participant"]),
            _cell_id(row["statement"]),
            row["vote"],
            ("votes", line),
            "vote",
            problems,
        )
        if vote is not None:
            checked.append(vote)
    if table is None or vote_table is None:
        problems.check()
    return _assemble(found, checked, problems)


def _json_entries(
    data: dict[str, Any], key: str, fields: Sequence[str], problems: _Problems
) -> list[tuple[int, dict[str, Any]]]:
    """(position, entry) for the entries of ``data[key]`` that are objects with every
    required field; the others are reported."""
    entries = data.get(key)
    if not isinstance(entries, list):
        problems.add("json", 1, key, f"{key!r} must be a list")
        return []
    kept = []
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            problems.add(key, position, None, "entry must be an object")
            continue
        missing = [f for f in fields if f not in entry]
        for name in missing:
            problems.add(key, position, name, "missing required field")
        if not missing:
            kept.append((position, entry))
    return kept


def _load_json(document: str | bytes) -> dict[str, Any]:
    problems = _Problems()
    text = _decode(document, "json", problems)
    problems.check()
    try:
        data = json.loads(text or "")
    except json.JSONDecodeError as e:
        raise PublicInputError([RowError("json", e.lineno, None, f"not JSON: {e.msg}")]) from e
    if isinstance(data, dict):
        return data
    message = "the document must be an object with statements and votes"
    raise PublicInputError([RowError("json", 1, None, message)])


def parse_json(document: str | bytes) -> PublicInput:
    """``{"statements": [{"id", "text"}], "votes": [{"participant", "statement", "vote"}]}``."""
    problems = _Problems()
    data = _load_json(document)
    found = _Statements("statements")
    for position, entry in _json_entries(data, "statements", ("id", "text"), problems):
        _add_statement(
            found,
            position,
            _json_id(entry["id"]),
            entry["text"],
            entry.get("author"),
            ("id", "text", "author"),
            problems,
        )
    checked = []
    fields = ("participant", "statement", "vote")
    for position, entry in _json_entries(data, "votes", fields, problems):
        vote = _vote(
            _json_id(entry["participant"]),
            _json_id(entry["statement"]),
            entry["vote"],
            ("votes", position),
            "vote",
            problems,
        )
        if vote is not None:
            checked.append(vote)
    return _assemble(found, checked, problems)


def _moderated_out(raw: str | None, line: int, problems: _Problems) -> bool | None:
    """Polis' ``moderated``: 1 accepted, 0 not yet moderated, -1 moderated out; None (and
    reported) when it is something else."""
    word = (raw or "").strip()
    if word in ("", "0", "1"):
        return False
    if word == "-1":
        return True
    problems.add("comments", line, "moderated", f"moderated must be -1, 0 or 1, not {raw!r}")
    return None


def _polis_comments(data: str | bytes, problems: _Problems) -> _Statements | None:
    found = _Statements("comments")
    table = _read_csv(data, "comments", ("comment-id", "comment-body"), problems)
    if table is None:
        return None
    for line, row in table.rows:
        comment = _cell_id(row["comment-id"])
        out = _moderated_out(row.get("moderated"), line, problems)
        if comment is not None and out is not False:
            found.dropped.add(comment)  # moderated out, or its moderation unreadable
            continue
        _add_statement(
            found,
            line,
            comment,
            row["comment-body"],
            row.get("author-id") or None,
            ("comment-id", "comment-body", "author-id"),
            problems,
        )
    return found


def _polis_columns(header: list[str], comments: _Statements, problems: _Problems) -> dict[str, str]:
    """Comment id of each vote column of ``participants-votes.csv``: ``<id>`` or
    ``comment-<id>``; every other column must be one of Polis' metadata columns."""
    columns: dict[str, str] = {}
    claimed: dict[str, str] = {}
    for name in header:
        if name in POLIS_METADATA_COLUMNS:
            continue
        comment = name.removeprefix("comment-")
        if comment in claimed:
            problems.add(
                "participants-votes",
                1,
                name,
                f"comment {comment!r} also has column {claimed[comment]!r}",
            )
        elif not comments.known(comment) and not comments.full:
            problems.add("participants-votes", 1, name, f"vote on unknown statement {comment!r}")
        else:
            claimed[comment] = columns[name] = comment
    return columns


def _polis_votes(table: _Table, columns: dict[str, str], problems: _Problems) -> list[_Vote]:
    """One vote per non-empty cell; an empty cell is a comment never seen."""
    votes: list[_Vote] = []
    first_line: dict[str, int] = {}
    source = "participants-votes"
    for line, row in table.rows:
        participant = _cell_id(row["participant"])
        if participant is None:
            problems.add(source, line, "participant", "empty participant id")
            continue
        if participant in first_line:
            problems.add(
                source,
                line,
                "participant",
                f"participant {participant!r} already has line {first_line[participant]}",
            )
            continue
        first_line[participant] = line
        for name, comment in columns.items():
            raw = row[name]
            if not raw.strip():
                continue
            value = parse_vote(raw)
            if value is None:
                problems.add(source, line, name, _unknown_vote(raw))
            else:
                votes.append(_Vote(participant, comment, value, source, line, name))
    return votes


def parse_polis_export(comments: str | bytes, participants_votes: str | bytes) -> PublicInput:
    """A Polis export's ``comments.csv`` and ``participants-votes.csv``; comments moderated
    out (``moderated`` -1) are left out together with their votes."""
    problems = _Problems()
    found = _polis_comments(comments, problems)
    table = _read_csv(participants_votes, "participants-votes", ("participant",), problems)
    if found is None or table is None:
        problems.check()
    assert found is not None and table is not None
    votes = _polis_votes(table, _polis_columns(table.header, found, problems), problems)
    return _assemble(found, votes, problems)


def vote_counts(data: PublicInput) -> np.ndarray:
    """Votes cast by each participant (passes count; statements not seen do not)."""
    counts: np.ndarray = (~np.isnan(data.votes)).sum(axis=1)
    return counts
