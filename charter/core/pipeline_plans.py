"""The stages of the whole Constitutional AI recipe, and what may run next. Pure.

A pipeline chains what Charter otherwise runs by hand (Bai et al. 2022, sections 3-4):

====================  ===========  ============================================
stage                 kind         needs
====================  ===========  ============================================
``sl_cai``            job          (red-team prompts, the base model)
``sft_data``          dataset      ``sl_cai`` (its revisions, mixed with helpful data)
``sft``               run          ``sft_data``
``rl_cai``            job          ``sft`` (the SFT model answers and judges)
``pref_data``         dataset      ``rl_cai``
``pm``                run          ``pref_data``
``ppo|rloo|grpo``     run          ``sft``, ``pref_data``, ``pm``
``dpo``               run          ``sft``, ``pref_data``
``elo``               policy_eval  ``sft`` and every RL stage
====================  ===========  ============================================

Each stage is one ordinary Charter object (a job, a dataset version, a training run, a
policy evaluation), submitted with a body built from the pipeline's spec and the outputs
of the stages it needs. A stage is tried in *attempts*: the current one is the latest.
Resuming a failed pipeline tries its failed stages again; re-running from a stage
supersedes it and everything downstream of it, and leaves the rest (re-running from
``pm`` keeps ``dpo``, which never read the PM).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

StageKind = Literal["job", "dataset", "run", "policy_eval"]
RL_STAGES = ("ppo", "dpo", "rloo", "grpo")
"""The policy-training stages a pipeline may ask for (any of them, at least one)."""
REWARDED = frozenset({"ppo", "rloo", "grpo"})


class StageStatus(StrEnum):
    """One attempt of a stage. A stage with no attempt yet is pending."""

    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    """Re-run: a later attempt replaces it."""


RETRIED = frozenset({StageStatus.FAILED, StageStatus.CANCELLED, StageStatus.SUPERSEDED})
"""A current attempt in one of these is tried again while the pipeline is active."""


class PipelineState(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Stage:
    name: str
    kind: StageKind
    needs: tuple[str, ...]


def stages(rl: Sequence[str]) -> tuple[Stage, ...]:
    """The stages of a pipeline that trains the policies ``rl`` (a subset of
    :data:`RL_STAGES`), in the order they become runnable."""
    unknown = [name for name in rl if name not in RL_STAGES]
    if unknown or not rl:
        raise ValueError(f"rl: one or more of {', '.join(RL_STAGES)}, got {list(rl)}")
    chosen = [name for name in RL_STAGES if name in rl]
    return (
        Stage("sl_cai", "job", ()),
        Stage("sft_data", "dataset", ("sl_cai",)),
        Stage("sft", "run", ("sft_data",)),
        Stage("rl_cai", "job", ("sft",)),
        Stage("pref_data", "dataset", ("rl_cai",)),
        Stage("pm", "run", ("pref_data",)),
        *(
            Stage(
                name,
                "run",
                ("sft", "pref_data", "pm") if name in REWARDED else ("sft", "pref_data"),
            )
            for name in chosen
        ),
        Stage("elo", "policy_eval", ("sft", *chosen)),
    )


def downstream(graph: Sequence[Stage], name: str) -> list[str]:
    """``name`` and every stage that reads it, directly or not, in stage order."""
    if name not in {s.name for s in graph}:
        raise ValueError(f"no stage {name!r} (stages: {', '.join(s.name for s in graph)})")
    found = {name}
    for stage in graph:  # the graph is in topological order: one pass suffices
        if found.intersection(stage.needs):
            found.add(stage.name)
    return [s.name for s in graph if s.name in found]


def runnable(graph: Sequence[Stage], current: Mapping[str, StageStatus]) -> list[str]:
    """Stages to submit now: every stage it needs completed, and no attempt of its own
    yet, or a current one that failed, was cancelled or was superseded."""
    return [
        s.name
        for s in graph
        if all(current.get(n) == StageStatus.COMPLETED for n in s.needs)
        and (s.name not in current or current[s.name] in RETRIED)
    ]


def finished(graph: Sequence[Stage], current: Mapping[str, StageStatus]) -> bool:
    return all(current.get(s.name) == StageStatus.COMPLETED for s in graph)
