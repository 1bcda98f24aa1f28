"""The chat tokenisation rules every real engine shares, so their prompts agree token for token.

The transformers and vLLM engines hand their models token ids made here, from the
model's own Hugging Face tokenizer: the chat template rendered with a generation
prompt and tokenised with ``add_special_tokens=False``. Three rules sit on top:

* **Control tokens in user text stay text.** When a message content contains a
  special-token string (``<|im_end|>``, ...), the template is rendered with
  sentinels in place of the contents; the template text is tokenised normally and
  each content with ``split_special_tokens=True``. Without such strings this is the
  plain tokenisation of the rendered prompt.
* **Letter tokens.** The assistant prefix of a feedback prompt ends with ``"("``.
  With the SmolLM2 (GPT-2 style byte-level BPE) tokenizer ``"(A"`` encodes as
  ``["(", "A"]`` and ``"The answer is: (A"`` as ``[..., "Ġ(", "A"]``: punctuation and
  letters are separate pre-tokens, so the letter is its own token (``"A"`` = 49,
  ``"B"`` = 50, not ``"ĠA"``). Nothing is hard-coded: for each prefix ``prefix`` and
  ``prefix + letter`` are encoded, and the one extra token is the letter's id when
  the first is a strict prefix of the second; only if the letter would merge with
  the prefix's last token is the bare letter's own token id used (with a warning).
* **Stop ids.** A turn ends at the generation config's ``eos_token_id``, the
  tokenizer's eos token, or any known end-of-turn marker the vocabulary has.
* **Plain prompts** (:func:`charter.core.engine.plain_prompt`) skip the chat template:
  the text is tokenised as is, control-token strings in it staying text, after the
  tokenizer's BOS token when the tokenizer adds one to plain text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from charter.core.engine import Conversation, is_plain

log = logging.getLogger(__name__)

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
"""End-of-turn and end-of-document markers of common chat templates; each stops a turn."""

_SENTINEL = "\ue000charter-msg-{}\ue001"
_SENTINEL_RE = re.compile("\ue000charter-msg-(\\d+)\ue001")


def special_token_strings(tokenizer: Any) -> tuple[str, ...]:
    """Control-token strings: named special tokens, then special added tokens, deduplicated."""
    specials = list(tokenizer.all_special_tokens)
    for _, added in sorted(tokenizer.added_tokens_decoder.items()):
        if added.special:
            specials.append(added.content)
    return tuple(dict.fromkeys(s for s in specials if s))


def stop_token_ids(tokenizer: Any, generation_eos: int | Sequence[int] | None) -> tuple[int, ...]:
    """End-of-turn ids: generation config, tokenizer eos, and known end-of-turn markers."""
    eos: list[int] = []
    if isinstance(generation_eos, int):
        eos.append(generation_eos)
    elif generation_eos:
        eos.extend(int(e) for e in generation_eos)
    if tokenizer.eos_token_id is not None:
        eos.append(int(tokenizer.eos_token_id))
    for candidate in END_OF_TURN:
        tid = tokenizer.convert_tokens_to_ids(candidate)
        if isinstance(tid, int) and tid >= 0 and tokenizer.convert_ids_to_tokens(tid) == candidate:
            eos.append(tid)
    return tuple(dict.fromkeys(eos))


class ChatTokens:
    """One tokenizer's chat prompts, letter ids and stop ids (the rules above)."""

    def __init__(self, tokenizer: Any, generation_eos: int | Sequence[int] | None) -> None:
        """``generation_eos``: the model's generation-config ``eos_token_id``, if any."""
        self.tokenizer = tokenizer
        self.special_tokens = special_token_strings(tokenizer)
        """Control-token strings of this tokenizer, neutralised in user text."""
        self.eos_token_ids = stop_token_ids(tokenizer, generation_eos)
        """Token ids that end a generated turn."""
        self._letter_ids: dict[tuple[str, str], int] = {}

    def encode(self, text: str, *, split_special: bool = False) -> list[int]:
        """Plain token ids of ``text``: no BOS/EOS added; control-token strings become
        control tokens unless ``split_special``."""
        ids = self.tokenizer(
            text, add_special_tokens=False, split_special_tokens=split_special
        ).input_ids
        return [int(i) for i in ids]

    def render(self, conversation: Conversation) -> str:
        """The chat template of the conversation with a generation prompt, as text (a
        plain prompt: its text)."""
        if is_plain(conversation):
            return conversation[0]["content"]
        messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
        for m in messages:
            if not isinstance(m["content"], str) or not isinstance(m["role"], str):
                raise TypeError("message role and content must be strings")
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return str(text)

    def encode_prompt(self, conversation: Conversation, suffix: str = "") -> list[int]:
        """Token ids of the chat prompt (with generation prompt) followed by ``suffix``;
        message contents never become control tokens."""
        if is_plain(conversation):
            bos = self.tokenizer.bos_token_id
            adds_bos = getattr(self.tokenizer, "add_bos_token", False) and bos is not None
            start = [int(bos)] if adds_bos else []
            return start + self.encode(conversation[0]["content"] + suffix, split_special=True)
        text = self.render(conversation) + suffix
        contents = [m["content"] for m in conversation]
        if not any(s in c for c in contents for s in self.special_tokens):
            return self.encode(text)
        masked = [
            {"role": m["role"], "content": _SENTINEL.format(i)} for i, m in enumerate(conversation)
        ]
        pieces = _SENTINEL_RE.split(self.render(masked) + suffix)
        # pieces alternate: template text, message index, template text, ...
        indices = [int(p) for p in pieces[1::2]]
        rebuilt = "".join(contents[int(p)] if k % 2 else p for k, p in enumerate(pieces))
        if indices != list(range(len(contents))) or rebuilt != text:
            raise ValueError(
                "message content contains control tokens and the chat template cannot be "
                "split safely; neutralise special tokens before calling the engine"
            )
        ids: list[int] = []
        for k, piece in enumerate(pieces):
            if k % 2:
                ids.extend(self.encode(contents[int(piece)], split_special=True))
            elif piece:
                ids.extend(self.encode(piece))
        return ids

    def choice_token_id(self, assistant_prefix: str, letter: str) -> int:
        """Token id of ``letter`` as the next token after ``assistant_prefix`` (module doc)."""
        key = (assistant_prefix, letter)
        if key in self._letter_ids:
            return self._letter_ids[key]
        if not letter:
            raise ValueError("choice letters must be non-empty")
        base = self.encode(assistant_prefix)
        full = self.encode(assistant_prefix + letter)
        if len(full) == len(base) + 1 and full[: len(base)] == base:
            tid = full[-1]
        else:
            alone = self.encode(letter)
            if len(alone) != 1:
                raise ValueError(f"choice {letter!r} is not a single token for this tokenizer")
            tid = alone[0]
            log.warning(
                "choice %r merges with the end of prefix %r; using its bare token id %d",
                letter,
                assistant_prefix[-20:],
                tid,
            )
        self._letter_ids[key] = tid
        return tid
