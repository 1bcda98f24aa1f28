"""Critique templates: how SL-CAI asks the model to critique and to revise its answer.

An SL-CAI round is a chat: the system turn, the conversation, the model's answer,
then a user turn asking for a critique against a principle, the critique, and a user
turn asking for a revision. A template owns the system turn and the two request
turns, as sandboxed Jinja2 (the same sandbox and structure rules as the feedback
templates, :mod:`charter.core.feedback_templates`); the conversation, the answer and
the critique stay turns of their own, written by the platform.

Variables: ``critique_request`` and ``revision_request`` (the drawn principle's two
texts, the project's own), ``conversation`` (``Human: ...`` / ``Assistant: ...`` lines)
and ``messages`` (the same as ``{role, content}``), ``response`` (the answer being
critiqued), and in the revision turn ``critique``. The conversation, the response and
the critique are untrusted: they are neutralised before rendering (the tokenizer's
control tokens and the template's own :attr:`CritiqueTemplate.delimiters` broken).
Few-shot examples are rendered through the same template.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from jinja2 import TemplateError

from charter.core.feedback_templates import (
    TemplateInvalid,
    check_structure,
    compile_source,
    restored_fields,
    shipped,
    stored_fields,
)

SYSTEM = "You are a helpful, honest and harmless assistant."

CRITIQUE_VARIABLES = ("conversation", "messages", "response", "critique_request")
"""What the critique request turn may use."""
REVISION_VARIABLES = (*CRITIQUE_VARIABLES, "critique", "revision_request")
"""What the revision request turn may use."""


@dataclass(frozen=True)
class CritiqueTemplate:
    name: str
    """How jobs choose it (``params.critique_template``)."""
    description: str = ""
    critique: str = "{{ critique_request }}"
    """Jinja2 source of the user turn that asks for the critique."""
    revision: str = "{{ revision_request }}"
    """Jinja2 source of the user turn that asks for the revision."""
    system: str = SYSTEM
    delimiters: tuple[str, ...] = ()
    """Structure of this template that untrusted text must not be able to write."""
    version: str = "1"

    def __post_init__(self) -> None:
        for field, variables in (
            ("critique", CRITIQUE_VARIABLES),
            ("revision", REVISION_VARIABLES),
        ):
            try:
                check_structure(getattr(self, field), variables)
                compile_source(getattr(self, field))
            except TemplateInvalid as exc:
                raise TemplateInvalid(str(exc), field=field) from exc
            except TemplateError as exc:
                raise TemplateInvalid(f"{field}: {exc}", field=field) from exc
        if not self.system.strip():
            raise TemplateInvalid("the system turn must not be empty", field="system")

    @cached_property
    def _compiled(self) -> tuple[Any, Any]:
        return compile_source(self.critique), compile_source(self.revision)

    def render_critique(self, **variables: Any) -> str:
        return self._render(0, CRITIQUE_VARIABLES, variables)

    def render_revision(self, **variables: Any) -> str:
        return self._render(1, REVISION_VARIABLES, variables)

    def _render(self, which: int, allowed: tuple[str, ...], variables: dict[str, Any]) -> str:
        unknown = set(variables) - set(allowed)
        if unknown:
            raise TemplateInvalid(f"unknown template variables {sorted(unknown)}", "variables")
        try:
            return str(self._compiled[which].render(**variables))
        except TemplateError as exc:
            field = ("critique", "revision")[which]
            raise TemplateInvalid(f"{field}: {exc}", field=field) from exc

    @property
    def is_default(self) -> bool:
        """Whether it makes exactly the prompts Charter made before templates existed."""
        return self.fingerprint() == DEFAULT_TEMPLATE.fingerprint()

    def fingerprint(self) -> str:
        """The text that defines what this template makes of its inputs."""
        parts = (self.system, self.critique, self.revision, "\x1e".join(self.delimiters))
        return "\x1f".join(parts)

    def sha256(self) -> str:
        return hashlib.sha256(self.fingerprint().encode()).hexdigest()


DEFAULT_TEMPLATE = CritiqueTemplate(
    name="charter-default",
    description="The principle's critique and revision requests as plain user turns.",
)

LABELLED = CritiqueTemplate(
    name="paper-labelled",
    description=(
        "The requests labelled as in Bai et al. (2022), appendix: 'CritiqueRequest: ...' and "
        "'RevisionRequest: ...'."
    ),
    critique="CritiqueRequest: {{ critique_request }}",
    revision="RevisionRequest: {{ revision_request }}",
    delimiters=("CritiqueRequest:", "RevisionRequest:"),
)

QUOTED = CritiqueTemplate(
    name="quoted-response",
    description=(
        "The critique request quotes the answer in tags, so a small model sees which text "
        "to critique; the revision request quotes the critique."
    ),
    critique=(
        "Here is the assistant's last response:\n<response>\n{{ response }}\n</response>\n\n"
        "{{ critique_request }}"
    ),
    revision=(
        "Here is the critique:\n<critique>\n{{ critique }}\n</critique>\n\n{{ revision_request }}"
    ),
    delimiters=("<response>", "</response>", "<critique>", "</critique>"),
)

BUILT_IN: dict[str, CritiqueTemplate] = {t.name: t for t in (DEFAULT_TEMPLATE, LABELLED, QUOTED)}
DEFAULT = DEFAULT_TEMPLATE.name

SPEC_FIELDS = ("description", "critique", "revision", "system", "delimiters")
"""What a stored critique template is made of, besides its name and version."""


def spec_of(template: CritiqueTemplate) -> dict[str, object]:
    return stored_fields(template, SPEC_FIELDS)


def from_spec(name: str, version: int, spec: dict[str, object]) -> CritiqueTemplate:
    """A project's stored template (``TemplateInvalid`` or ``TypeError`` if it is not one)."""
    return CritiqueTemplate(name=name, version=str(version), **restored_fields(spec, SPEC_FIELDS))


def get(name: str) -> CritiqueTemplate:
    """A shipped template by name; ``KeyError`` names the known ones."""
    return shipped(BUILT_IN, name, "critique template")
