"""Label rows -> the dataset shapes TRL consumes unchanged.

SFT (conversational prompt/completion): ``{"prompt": [messages], "completion":
[{"role": "assistant", ...}]}``. Preference: ``{"prompt": [messages], "chosen":
[...], "rejected": [...], "chosen_probability": p}`` where ``p`` is the soft AI
label, the probability that ``chosen`` is the better response.
"""

from __future__ import annotations

import json
from typing import Any

from charter.core.jobs import JobType, dataset_kind, in_default_datasets
from charter.core.labels import chosen_rejected

PROVENANCE = (
    "id",
    "job_id",
    "constitution_ref",
    "principle_ids",
    "model",
    "model_revision",
    "template_hash",
)


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _provenance(label: dict[str, Any]) -> dict[str, Any]:
    return {f"label_{k}" if k == "id" else k: label.get(k) for k in PROVENANCE}


def sft_row(label: dict[str, Any], *, provenance: bool = True) -> dict[str, Any] | None:
    """The final revision as the completion; None for labels without one."""
    if label.get("completion") is None:
        return None
    row = {"prompt": label["conversation"], "completion": _assistant(label["completion"])}
    return row | (_provenance(label) if provenance else {})


def preference_row(label: dict[str, Any], *, provenance: bool = True) -> dict[str, Any] | None:
    """Chosen/rejected by the soft label; None for labels without one."""
    if label.get("p_a") is None:
        return None
    side, p = chosen_rejected(label["p_a"])
    chosen, rejected = (label["response_a"], label["response_b"])
    if side == "b":
        chosen, rejected = rejected, chosen
    row = {
        "prompt": label["conversation"],
        "chosen": _assistant(chosen),
        "rejected": _assistant(rejected),
        "chosen_probability": p,
    }
    extra = {"swap_disagreement": label.get("swap_disagreement")} | _provenance(label)
    return row | (extra if provenance else {})


# --------------------------------------------------------------------------- datasets

SFT_KINDS = tuple(t.value for t in JobType if dataset_kind(t) == "sft")
"""Label kinds whose final text is an SFT completion."""
PREFERENCE_KINDS = tuple(t.value for t in JobType if dataset_kind(t) == "preference")
"""Label kinds that carry a soft A/B preference label."""
LABEL_KINDS = {"sft": SFT_KINDS, "preference": PREFERENCE_KINDS}
"""Dataset kind -> the label kinds it can hold."""
DEFAULT_LABEL_KINDS = {
    kind: tuple(k for k in kinds if in_default_datasets(JobType(k)))
    for kind, kinds in LABEL_KINDS.items()
}
"""Dataset kind -> the label kinds it holds when its filter names none."""

PROVENANCE_COLUMNS = tuple(f"label_{k}" if k == "id" else k for k in PROVENANCE)
SFT_COLUMNS = ("prompt", "completion", *PROVENANCE_COLUMNS)
"""The fixed columns of an SFT export, in order (``sft_row`` with provenance)."""
PREFERENCE_COLUMNS = (
    "prompt",
    "chosen",
    "rejected",
    "chosen_probability",
    "swap_disagreement",
    *PROVENANCE_COLUMNS,
)
"""The fixed columns of a preference export, in order (``preference_row`` with provenance)."""
CLASSIFIER_PROVENANCE = (
    "request_label_id",
    "paraphrase_label_id",
    "response_label_id",
    "constitution_ref",
    "model",
)
"""Where a synthetic classifier row came from: the labels of the two generation jobs
(``charter.core.classifier_data``); null for an uploaded row."""
CLASSIFIER_COLUMNS = (
    "prompt",
    "response",
    "category",
    "restricted",
    "harmful",
    "variant",
    "response_kind",
    *CLASSIFIER_PROVENANCE,
)
"""The fixed columns of a classifier export: a user message (text), a response, the
category it was written for and whether the request (``restricted``) and the response
(``harmful``) are to be flagged."""
COLUMNS = {"sft": SFT_COLUMNS, "preference": PREFERENCE_COLUMNS, "classifier": CLASSIFIER_COLUMNS}

_NO_PROVENANCE: dict[str, Any] = dict.fromkeys(PROVENANCE_COLUMNS)


def user_row(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """A user-supplied row (already in TRL shape) in the export's fixed columns.

    It has no label, so the provenance columns are null.
    """
    if kind == "classifier":
        return {name: row.get(name) for name in CLASSIFIER_COLUMNS}
    if kind == "sft":
        return {"prompt": row["prompt"], "completion": row["completion"]} | _NO_PROVENANCE
    return {
        "prompt": row["prompt"],
        "chosen": row["chosen"],
        "rejected": row["rejected"],
        "chosen_probability": row.get("chosen_probability", 1.0),
        "swap_disagreement": None,
    } | _NO_PROVENANCE


_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def jsonl_line(row: dict[str, Any]) -> str:
    """The canonical JSONL line of an export row: ``json.dumps(row, ensure_ascii=False)``
    (UTF-8 text, ``", "`` and ``": "`` separators, keys in column order) and a newline.

    A dataset version's checksum is the sha256 of its rows' lines, concatenated.
    """
    return _encode(row) + "\n"
