"""Public input reads the same population from a votes CSV, JSON and a Polis export,
keeps "never saw it" apart from "pass", and reports every problem with its line and
column at once."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from charter.core import public_input
from charter.core.public_input import (
    MAX_ERRORS,
    PublicInput,
    PublicInputError,
    Statement,
    parse_json,
    parse_polis_export,
    parse_vote,
    parse_votes_csv,
    vote_counts,
)

NAN = float("nan")
STATEMENTS = (
    Statement("0", "The AI should be honest.", "p1"),
    Statement("1", 'The AI should say "I don\'t know", when unsure.', "p2"),
    Statement("2", "The AI should\nnever flatter.", None),
    Statement("3", "The AI should obey its owner.", "p1"),
)
PARTICIPANTS = ("p1", "p2", "p3", "p4")
VOTES = np.array(
    [
        [1, -1, 0, NAN],
        [1, 1, NAN, -1],
        [NAN, 0, -1, 1],
        [1, NAN, NAN, NAN],
    ]
)
POPULATION = PublicInput(STATEMENTS, PARTICIPANTS, VOTES)
WORDS = {1.0: "Agree", -1.0: "DISAGREE", 0.0: "pass"}


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def _cast(data: PublicInput) -> list[tuple[str, str, float]]:
    return [
        (p, s.id, float(data.votes[i, j]))
        for i, p in enumerate(data.participants)
        for j, s in enumerate(data.statements)
        if not np.isnan(data.votes[i, j])
    ]


def as_votes_csv(data: PublicInput, *, words: bool = False) -> tuple[str, str]:
    votes = [["participant", "statement", "vote"]] + [
        [p, s, WORDS[v] if words else f"{v:g}"] for p, s, v in _cast(data)
    ]
    statements = [["statement", "text", "author"]] + [
        [s.id, s.text, s.author or ""] for s in data.statements
    ]
    return _csv(votes), _csv(statements)


def as_json(data: PublicInput) -> str:
    return json.dumps(
        {
            "statements": [
                {"id": int(s.id), "text": s.text, "author": s.author} for s in data.statements
            ],
            "votes": [
                {"participant": p, "statement": s, "vote": int(v)} for p, s, v in _cast(data)
            ],
        }
    )


def as_polis(
    data: PublicInput, *, prefix: str = "", moderated_out: tuple[Statement, ...] = ()
) -> tuple[str, str]:
    """comments.csv and participants-votes.csv as a Polis export writes them; the
    ``moderated_out`` comments come with a vote from every participant."""
    comments = [
        [
            "timestamp",
            "datetime",
            "comment-id",
            "author-id",
            "agrees",
            "disagrees",
            "moderated",
            "comment-body",
        ]
    ]
    for s in data.statements:
        comments.append(
            ["1700000000", "Tue Nov 14 2023", s.id, s.author or "", "0", "0", "1", s.text]
        )
    for s in moderated_out:
        comments.append(["1700000000", "Tue Nov 14 2023", s.id, "", "0", "0", "-1", s.text])
    ids = [s.id for s in data.statements] + [s.id for s in moderated_out]
    matrix = [
        ["participant", "group-id", "n-comments", "n-votes", "n-agree", "n-disagree"]
        + [prefix + i for i in ids]
    ]
    for i, p in enumerate(data.participants):
        row = data.votes[i]
        cells = ["" if np.isnan(v) else f"{v:g}" for v in row] + ["-1"] * len(moderated_out)
        seen = row[~np.isnan(row)]
        counts = [len(seen), (seen == 1).sum(), (seen == -1).sum()]
        matrix.append([p, "0", "0", *(str(c) for c in counts), *cells])
    return _csv(comments), _csv(matrix)


# ----------------------------------------------------------------------------- formats


def test_every_format_reads_the_same_population() -> None:
    votes, statements = as_votes_csv(POPULATION)
    word_votes, _ = as_votes_csv(POPULATION, words=True)
    comments, matrix = as_polis(POPULATION)
    new_comments, new_matrix = as_polis(POPULATION, prefix="comment-")
    parsed = [
        parse_votes_csv(votes, statements),
        parse_votes_csv(word_votes.encode(), ("\ufeff" + statements).encode()),
        parse_json(as_json(POPULATION)),
        parse_json(as_json(POPULATION).encode()),
        parse_polis_export(comments, matrix),
        parse_polis_export(new_comments.encode(), new_matrix.encode()),
    ]
    for data in parsed:
        assert data == POPULATION
        assert data.statements == STATEMENTS
        assert data.participants == PARTICIPANTS
        assert np.array_equal(data.votes, VOTES, equal_nan=True)


def test_a_pass_is_a_vote_and_a_statement_not_seen_is_missing() -> None:
    comments, matrix = as_polis(POPULATION)
    data = parse_polis_export(comments, matrix)
    assert data.votes[0, 2] == 0.0  # p1 passed on "never flatter"
    assert np.isnan(data.votes[0, 3])  # p1 never saw "obey its owner"
    assert vote_counts(data).tolist() == [3, 3, 3, 1]
    assert [parse_vote(v) for v in ("1", "+1", "-1", "0", "PASS", " agree ", 1, -1.0)] == [
        1.0, 1.0, -1.0, 0.0, 0.0, 1.0, 1.0, -1.0,
    ]  # fmt: skip
    assert [parse_vote(v) for v in ("", "yes", "2", "0.5", True, None)] == [None] * 6


def test_moderated_out_polis_comments_are_left_out_with_their_votes() -> None:
    rejected = (Statement("9", "The AI should insult people."),)
    comments, matrix = as_polis(POPULATION, moderated_out=rejected)
    matrix += _csv([["p5", "", "0", "1", "0", "1", "", "", "", "", "-1"]])
    data = parse_polis_export(comments, matrix)
    assert data == POPULATION
    assert "p5" not in data.participants  # voted on moderated-out comments only


def test_the_matrix_is_read_only_and_checked() -> None:
    with pytest.raises(ValueError):
        POPULATION.votes[0, 0] = -1
    with pytest.raises(ValueError, match="shape"):
        PublicInput(STATEMENTS, PARTICIPANTS[:2], VOTES)
    with pytest.raises(ValueError, match="votes must be"):
        PublicInput(STATEMENTS[:1], PARTICIPANTS[:1], np.array([[0.5]]))


# ----------------------------------------------------------------------------- errors


def _where(error: PublicInputError) -> set[tuple[str, int, str | None]]:
    return {(e.source, e.line, e.column) for e in error.errors}


def test_every_error_in_a_votes_csv_is_reported_at_once_with_line_and_column() -> None:
    statements = (
        "statement,text\n"
        's1,"Two\nlines"\n'  # lines 2-3
        "s2,   \n"  # line 4: empty text
        "s1,again\n"  # line 5: duplicate id
    )
    votes = (
        "participant,statement,vote\n"
        "p1,s1,agree\n"  # 2: fine
        "p1,s9,agree\n"  # 3: unknown statement
        "p2,s1,maybe\n"  # 4: unknown vote
        "p1,s1,disagree\n"  # 5: changes p1's vote
        "p3,s1\n"  # 6: ragged
        "p1,s1,1\n"  # 7: the same vote again: fine
        "p4,s2,agree\n"  # 8: on a rejected statement: already reported
        ",s1,agree\n"  # 9: no participant
        "p5,s1,pass,extra\n"  # 10: ragged
    )
    with pytest.raises(PublicInputError) as caught:
        parse_votes_csv(votes, statements)
    assert _where(caught.value) == {
        ("statements", 4, "text"),
        ("statements", 5, "statement"),
        ("votes", 3, "statement"),
        ("votes", 4, "vote"),
        ("votes", 5, "vote"),
        ("votes", 6, "vote"),
        ("votes", 9, "participant"),
        ("votes", 10, None),
    }
    assert (caught.value.line, caught.value.column) == (4, "text")
    messages = {(e.source, e.line): e.message for e in caught.value.errors}
    assert "unknown statement 's9'" in messages["votes", 3]
    assert "'maybe'" in messages["votes", 4]
    assert "at line 2" in messages["votes", 5]
    assert "already defined at line 2" in messages["statements", 5]
    assert "votes line 3, column 'statement'" in str(caught.value)


def test_missing_columns_and_no_statements_are_errors() -> None:
    with pytest.raises(PublicInputError) as caught:
        parse_votes_csv("participant,vote\np1,1\n", "statement,body\ns1,hi\n")
    assert _where(caught.value) == {("statements", 1, "text"), ("votes", 1, "statement")}
    with pytest.raises(PublicInputError) as caught:
        parse_votes_csv("participant,statement,vote\n", "statement,text\n")
    assert _where(caught.value) == {("statements", 1, None)}
    assert "no statements" in str(caught.value)
    with pytest.raises(PublicInputError) as caught:
        parse_votes_csv("", "statement,statement,text\n")
    assert _where(caught.value) == {
        ("statements", 1, "statement"),
        ("votes", 1, "participant"),
        ("votes", 1, "statement"),
        ("votes", 1, "vote"),
    }


def test_polis_errors_name_the_comment_column() -> None:
    comments = _csv(
        [
            ["comment-id", "comment-body", "moderated"],
            ["0", "Be honest.", "1"],
            ["1", "", "0"],  # line 3: no text
            ["2", "Be kind.", "maybe"],  # line 4: unreadable moderation
        ]
    )
    matrix = _csv(
        [
            ["participant", "group-id", "n-votes", "0", "1", "2", "7"],  # 7: no such comment
            ["p1", "0", "2", "1", "1", "", ""],
            ["p2", "1", "1", "2", "", "", ""],  # line 3: vote 2
            ["p1", "0", "1", "-1", "", "", ""],  # line 4: p1 again
        ]
    )
    with pytest.raises(PublicInputError) as caught:
        parse_polis_export(comments, matrix)
    assert _where(caught.value) == {
        ("comments", 3, "comment-body"),
        ("comments", 4, "moderated"),
        ("participants-votes", 1, "7"),
        ("participants-votes", 3, "0"),
        ("participants-votes", 4, "participant"),
    }


def test_json_errors_point_at_the_entry() -> None:
    document = {
        "statements": [{"id": "a", "text": "Be honest."}, {"id": True, "text": "x"}, {"text": "y"}],
        "votes": [
            {"participant": "p1", "statement": "a", "vote": "agree"},
            {"participant": "p1", "statement": "b", "vote": 1},
            {"participant": "p2", "statement": "a", "vote": 3},
            "not an object",
        ],
    }
    with pytest.raises(PublicInputError) as caught:
        parse_json(json.dumps(document))
    assert _where(caught.value) == {
        ("statements", 2, "id"),
        ("statements", 3, "id"),
        ("votes", 2, "statement"),
        ("votes", 3, "vote"),
        ("votes", 4, None),
    }
    with pytest.raises(PublicInputError) as caught:
        parse_json('{"statements": [],\n "votes": [,]}')
    assert _where(caught.value) == {("json", 2, None)}
    with pytest.raises(PublicInputError) as caught:
        parse_json("[]")
    assert _where(caught.value) == {("json", 1, None)}


def test_bytes_that_are_not_utf8_are_reported_by_line() -> None:
    with pytest.raises(PublicInputError) as caught:
        parse_votes_csv(b"participant,statement,vote\np1,s1,1\n", b"statement,text\ns1,caf\xe9\n")
    assert _where(caught.value) == {("statements", 2, None)}


def test_at_most_max_errors_are_listed() -> None:
    votes = "participant,statement,vote\n" + "p1,s1,maybe\n" * (MAX_ERRORS + 20)
    with pytest.raises(PublicInputError) as caught:
        parse_votes_csv(votes, "statement,text\ns1,hi\n")
    assert len(caught.value.errors) == MAX_ERRORS
    assert caught.value.truncated


def test_too_many_statements_or_participants_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(public_input, "MAX_STATEMENTS", 3)
    monkeypatch.setattr(public_input, "MAX_PARTICIPANTS", 2)
    statements = "statement,text\n" + "".join(f"s{i},text {i}\n" for i in range(5))
    votes = "participant,statement,vote\n" + "".join(f"p{i},s0,1\n" for i in range(4))
    with pytest.raises(PublicInputError) as caught:
        parse_votes_csv(votes, statements)
    assert _where(caught.value) == {("statements", 5, "statement"), ("votes", 4, "participant")}
    assert "more than 3 statements" in str(caught.value)
    assert "more than 2 participants" in str(caught.value)
