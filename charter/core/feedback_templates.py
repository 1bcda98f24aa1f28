"""Feedback templates: how an A/B comparison is put to the feedback model.

A template is a sandboxed Jinja2 text (``jinja2.sandbox``: no attribute tricks, no
imports, undefined names are errors) with documented variables, plus the answer
prefixes it declares. The platform, not the template, owns the answer position: it
appends ``answer_prefix`` (after reasoning, the reasoning then ``cot_answer_prefix``)
right after the rendered prompt and reads the log-probabilities of the letters that
follow, so no template can move or pre-empt the answer.

Two formats:

- ``chat``: the rendered text is the user turn of a chat conversation (with the
  template's ``system`` turn); the engine applies the model's chat template and the
  prefix opens the assistant turn. Few-shot examples are earlier user/assistant turns.
- ``plain``: the rendered text is the whole prompt, tokenised as is, with no chat
  template (the paper's format for a pretrained model, see :data:`PLAIN`). Few-shot
  examples are earlier blocks of the same text, each with its answer, separated by
  :attr:`FeedbackTemplate.separator`.

Variables: ``conversation`` (the transcript, ``Human: ...`` / ``Assistant: ...`` lines),
``messages`` (the same as a list of ``{role, content}``), ``principle``, ``response_a``,
``response_b`` and ``instruction`` (the answer or the chain-of-thought instruction).
Every one of them is untrusted text, neutralised before rendering: the tokenizer's
control tokens and the template's own :attr:`FeedbackTemplate.delimiters` are broken
(:func:`charter.core.prompts.neutralise`), so a response cannot pose as the
template's structure, whatever the template.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Literal, TypeVar

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

T = TypeVar("T")

VARIABLES = ("conversation", "messages", "principle", "response_a", "response_b", "instruction")
"""What a template may use; anything else is an error when it renders."""

_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)


FILTERS = frozenset(
    {"trim", "upper", "lower", "capitalize", "title", "indent", "replace", "default"}
)
"""Filters a template may apply; there are no calls, tests, macros or includes."""
_ALLOWED_NODES = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Const, nodes.If,
    nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Not, nodes.And, nodes.Or, nodes.Compare,
    nodes.Operand, nodes.CondExpr, nodes.Concat, nodes.For, nodes.Keyword,
)  # fmt: skip


class TemplateInvalid(ValueError):
    """A template that does not compile, uses a name it is not given, or does more
    than format its variables; ``field`` names the part at fault."""

    def __init__(self, message: str, field: str = "question") -> None:
        super().__init__(message)
        self.field = field


def check_structure(source: str, variables: tuple[str, ...] = VARIABLES) -> None:
    """Formatting only: output, ``if``, filters from :data:`FILTERS`, and one level of
    ``for`` over ``messages`` (bounded by the conversation), using only ``variables``.
    A template renders for every prompt a worker labels, so nothing in it may loop, call
    or import its way into unbounded work (the sandbox stops unsafe access, not
    expensive templates). Raises :class:`TemplateInvalid` or Jinja2's ``TemplateError``."""
    tree = _ENV.parse(source)
    targets = [f.target for f in tree.find_all(nodes.For)]
    known = {*variables, "loop", *(t.name for t in targets if isinstance(t, nodes.Name))}
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            raise TemplateInvalid(f"{type(node).__name__} is not allowed in a feedback template")
        if isinstance(node, nodes.Filter) and node.name not in FILTERS:
            raise TemplateInvalid(
                f"filter {node.name!r} is not allowed; allowed: {sorted(FILTERS)}"
            )
        if isinstance(node, nodes.For):
            iterated = node.iter
            if not (isinstance(iterated, nodes.Name) and iterated.name == "messages"):
                raise TemplateInvalid("a feedback template may only loop over messages")
            if node.recursive or any(True for _ in node.find_all(nodes.For)):
                raise TemplateInvalid("loops in a feedback template cannot nest")
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in known:
            raise TemplateInvalid(
                f"unknown variable {node.name!r}; a template has {list(variables)}"
            )


def compile_source(source: str) -> Any:
    """The sandboxed Jinja2 template of ``source`` (checked with :func:`check_structure`)."""
    return _ENV.from_string(source)


@dataclass(frozen=True)
class FeedbackTemplate:
    name: str
    """How jobs choose it (``params.feedback_template``)."""
    description: str
    question: str
    """The Jinja2 source of the question (the user turn, or the whole plain block)."""
    format: Literal["chat", "plain"] = "chat"
    system: str | None = None
    """The system turn of a chat template; a plain template has none."""
    instruction: str = "Answer with the letter of the better response."
    cot_instruction: str = (
        "Think it through step by step in a few sentences, then say which response is better."
    )
    answer_prefix: str = "The answer is: ("
    cot_answer_prefix: str = "\n\nTherefore, the answer is: ("
    delimiters: tuple[str, ...] = ()
    """Structure of this template that untrusted text must not be able to write."""
    separator: str = "\n\n"
    """Between the few-shot blocks of a plain template."""
    reasoning_lead: str = ""
    """Before the reasoning, which a plain template's text runs straight into (after
    ``Let's think step by step:`` a model writes a space first)."""
    version: str = "1"

    def __post_init__(self) -> None:
        if self.format not in ("chat", "plain"):
            raise TemplateInvalid(
                f"format must be 'chat' or 'plain', not {self.format!r}", field="format"
            )
        if self.format == "plain" and self.system is not None:
            raise TemplateInvalid("a plain template has no system turn", field="system")
        for name in ("answer_prefix", "cot_answer_prefix"):
            if not getattr(self, name).endswith("("):
                raise TemplateInvalid(
                    f"{name} must end with '(' so the letter is the next token", field=name
                )
        try:
            check_structure(self.question)
            self.compiled  # noqa: B018 - compile now: a bad template fails where it is made
        except TemplateError as exc:
            raise TemplateInvalid(f"question: {exc}") from exc

    @cached_property
    def compiled(self) -> Any:
        return compile_source(self.question)

    def render(self, **variables: Any) -> str:
        """The question with ``variables`` (already neutralised by the caller)."""
        unknown = set(variables) - set(VARIABLES)
        if unknown:
            raise TemplateInvalid(
                f"unknown template variables {sorted(unknown)}", field="variables"
            )
        try:
            return str(self.compiled.render(**variables))
        except TemplateError as exc:
            raise TemplateInvalid(f"question: {exc}") from exc

    def fingerprint(self) -> str:
        """The text that defines what this template makes of its inputs."""
        parts = (  # the version is where it is stored, not what it makes
            self.name,
            self.format,
            self.system or "",
            self.question,
            self.instruction,
            self.cot_instruction,
            self.answer_prefix,
            self.cot_answer_prefix,
            "\x1e".join(self.delimiters),
            self.separator,
            self.reasoning_lead,
        )
        return "\x1f".join(parts)

    def sha256(self) -> str:
        return hashlib.sha256(self.fingerprint().encode()).hexdigest()


CHAT = FeedbackTemplate(
    name="charter-chat",
    description=(
        "Charter's chat template: the conversation and the responses in tags, the principle "
        "between them, asked in a user turn."
    ),
    system=(
        "You compare two assistant responses against a principle and answer with the letter "
        "of the better one."
    ),
    question=(
        "Consider the following conversation between a human and an assistant:\n"
        "<conversation>\n{{ conversation }}\n</conversation>\n\n"
        "{{ principle }}\n\n"
        "Options:\n"
        "(A) <response>\n{{ response_a }}\n</response>\n"
        "(B) <response>\n{{ response_b }}\n</response>\n\n"
        "{{ instruction }}"
    ),
    delimiters=("<conversation>", "</conversation>", "<response>", "</response>"),
)

PRINCIPLE_FIRST = FeedbackTemplate(
    name="principle-first",
    description=(
        "The chat template with the principle stated before the conversation, so the judge "
        "reads the responses knowing what to look for."
    ),
    system=CHAT.system,
    question=(
        "{{ principle }}\n\n"
        "Consider the following conversation between a human and an assistant:\n"
        "<conversation>\n{{ conversation }}\n</conversation>\n\n"
        "Options:\n"
        "(A) <response>\n{{ response_a }}\n</response>\n"
        "(B) <response>\n{{ response_b }}\n</response>\n\n"
        "{{ instruction }}"
    ),
    delimiters=CHAT.delimiters,
)

PLAIN = FeedbackTemplate(
    name="paper-plain",
    description=(
        "The format of Bai et al. (2022), section 4.1, as plain text with no chat template: "
        "a Human/Assistant transcript, the principle, the options, then 'The answer is: ('."
    ),
    format="plain",
    question=(
        "Consider the following conversation between a human and an assistant:\n"
        "{{ conversation }}\n"
        "{{ principle }}\n"
        "Options:\n"
        "(A) {{ response_a }}\n"
        "(B) {{ response_b }}\n"
        "{{ instruction }}"
    ),
    instruction="",
    cot_instruction="Let's think step by step:",
    cot_answer_prefix="\nSo the answer is: (",
    reasoning_lead=" ",
    # Fake turns or options inside a response would read as the transcript's structure.
    delimiters=("Human:", "Assistant:", "Options:", "The answer is:", "So the answer is:"),
)

BUILT_IN: dict[str, FeedbackTemplate] = {t.name: t for t in (CHAT, PRINCIPLE_FIRST, PLAIN)}
DEFAULT = CHAT.name

NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
"""A project template's name (a shipped one's name cannot be reused)."""
REF = re.compile(rf"(?P<name>{NAME.pattern})(?:@(?P<version>[1-9][0-9]{{0,5}}))?")
"""How a job names a template: a shipped name, or a project's ``name`` or ``name@version``."""
SPEC_FIELDS = (
    "description", "format", "system", "question", "instruction", "cot_instruction",
    "answer_prefix", "cot_answer_prefix", "delimiters", "separator", "reasoning_lead",
)  # fmt: skip
"""What a stored template is made of, besides its name and version."""


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``(name, version)`` of a template reference; ``ValueError`` if it is not one."""
    match = REF.fullmatch(ref)
    if match is None:
        raise ValueError(f"{ref!r} is not a template name or name@version")
    version = match.group("version")
    return match.group("name"), int(version) if version else None


def stored_fields(template: Any, fields: tuple[str, ...]) -> dict[str, object]:
    """What is stored for a template (of either kind): ``fields``, tuples as lists."""
    data = asdict(template)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items() if k in fields}


def restored_fields(spec: Mapping[str, object], fields: tuple[str, ...]) -> dict[str, Any]:
    """The constructor's keywords for a stored spec (delimiters back to a tuple)."""
    out: dict[str, Any] = {k: spec[k] for k in fields if k in spec}
    if "delimiters" in out:
        out["delimiters"] = tuple(out["delimiters"])
    return out


def shipped(built_in: Mapping[str, T], name: str, what: str) -> T:
    """A shipped template by name; ``KeyError`` names the known ones."""
    try:
        return built_in[name]
    except KeyError:
        raise KeyError(f"unknown {what} {name!r}; known: {sorted(built_in)}") from None


def spec_of(template: FeedbackTemplate) -> dict[str, object]:
    """What is stored for a template: every field but its name and version."""
    return stored_fields(template, SPEC_FIELDS)


def from_spec(name: str, version: int, spec: dict[str, object]) -> FeedbackTemplate:
    """A project's stored template (``TemplateInvalid`` or ``TypeError`` if it is not one)."""
    return FeedbackTemplate(name=name, version=str(version), **restored_fields(spec, SPEC_FIELDS))


def get(name: str) -> FeedbackTemplate:
    """A shipped template by name; ``KeyError`` names the known ones."""
    return shipped(BUILT_IN, name, "feedback template")
