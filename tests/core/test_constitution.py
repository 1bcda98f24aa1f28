import json

import pytest
import yaml
from pydantic import ValidationError

from charter.core.constitution import Constitution, diff, parse_ref

DOC = {
    "name": "mini",
    "description": "A tiny constitution.",
    "critique_principles": [
        {"id": "harm", "critique": "Find harm.", "revision": "Remove harm."},
        {"id": "honesty", "critique": "Find untruths.", "revision": "Fix them."},
    ],
    "comparison_principles": [{"id": "kind", "text": "Which response is kinder?"}],
}


def test_same_content_same_hash_whatever_the_key_order_or_format():
    a = Constitution.model_validate(DOC)
    reordered = json.loads(json.dumps(DOC, sort_keys=True))
    reordered["critique_principles"] = [
        dict(reversed(list(p.items()))) for p in DOC["critique_principles"]
    ]
    b = Constitution.model_validate(reordered)
    c = Constitution.model_validate(yaml.safe_load(yaml.safe_dump(DOC, sort_keys=False)))
    assert a.content_hash() == b.content_hash() == c.content_hash()
    assert len(a.content_hash()) == 64


def test_whitespace_is_canonicalised():
    padded = json.loads(json.dumps(DOC))
    padded["description"] = "  A tiny constitution.  "
    assert (
        Constitution.model_validate(padded).content_hash()
        == Constitution.model_validate(DOC).content_hash()
    )


def test_changed_principle_changes_hash():
    changed = json.loads(json.dumps(DOC))
    changed["critique_principles"][0]["critique"] = "Find any harm at all."
    assert (
        Constitution.model_validate(changed).content_hash()
        != Constitution.model_validate(DOC).content_hash()
    )


def test_principle_order_is_content():
    # Draws index into the list, so reordering principles is a real change.
    swapped = json.loads(json.dumps(DOC))
    swapped["critique_principles"].reverse()
    assert (
        Constitution.model_validate(swapped).content_hash()
        != Constitution.model_validate(DOC).content_hash()
    )


def test_diff_reports_added_removed_changed():
    before = Constitution.model_validate(DOC)
    after_doc = json.loads(json.dumps(DOC))
    after_doc["critique_principles"][0]["revision"] = "Rewrite without harm."
    del after_doc["critique_principles"][1]
    after_doc["comparison_principles"].append({"id": "wise", "text": "Which is wiser?"})
    d = diff(before, Constitution.model_validate(after_doc))
    assert [c.id for c in d.critique_principles.changed] == ["harm"]
    assert [p["id"] for p in d.critique_principles.removed] == ["honesty"]
    assert [p["id"] for p in d.comparison_principles.added] == ["wise"]
    assert not d.empty
    assert diff(before, before).empty


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d.pop("name"), "name"),
        (lambda d: d.update(name="Bad Name"), "name"),
        (
            lambda d: d["critique_principles"].append(dict(d["critique_principles"][0])),
            "critique_principles",
        ),
        (lambda d: d.update(critique_principles=[], comparison_principles=[]), ""),
        (lambda d: d.update(unknown=1), "unknown"),
        (lambda d: d["comparison_principles"][0].update(text=""), "comparison_principles"),
    ],
)
def test_invalid_documents_are_rejected(mutate, where):
    doc = json.loads(json.dumps(DOC))
    mutate(doc)
    with pytest.raises(ValidationError) as info:
        Constitution.model_validate(doc)
    assert where in str(info.value)


def test_parse_ref():
    assert parse_ref("default") == ("default", None)
    assert parse_ref("default@3") == ("default", 3)
    for bad in ("Default", "default@0", "default@x", "@1", ""):
        with pytest.raises(ValueError):
            parse_ref(bad)
