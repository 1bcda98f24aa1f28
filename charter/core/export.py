"""Label rows -> the dataset shapes TRL consumes unchanged.

SFT (conversational prompt/completion): ``{"prompt": [messages], "completion":
[{"role": "assistant", ...}]}``. Preference: ``{"prompt": [messages], "chosen":
[...], "rejected": [...], "chosen_probability": p}`` where ``p`` is the soft AI
label, the probability that ``chosen`` is the better response.
"""

from __future__ import annotations

from typing import Any

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
