"""Tiny models for the trainer tests: a word-level tokenizer with a chat template and
random-initialised Llamas over it (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

SPECIAL = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def _word_tokenizer(words: Sequence[str]) -> Any:
    """Word-level tokenizer with a chat template: the special tokens, then one token per word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate((*SPECIAL, *words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(list(SPECIAL))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _tiny_llama(model_class: type, tokenizer: Any, *, seed: int | None = 0, **config: Any) -> Any:
    """A 2-layer, 32-wide ``model_class`` (a Llama model class) sized to ``tokenizer``.

    ``seed`` seeds torch before the random initialisation (None leaves the RNG as it
    is); ``config`` adds ``LlamaConfig`` fields (``max_position_embeddings`` is needed).
    """
    import torch
    from transformers import LlamaConfig

    if seed is not None:
        torch.manual_seed(seed)
    return model_class(
        LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **config,
        )
    )


@pytest.fixture(scope="session")
def word_tokenizer() -> Callable[[Sequence[str]], Any]:
    """``word_tokenizer(words)``: a word-level tokenizer with a chat template."""
    return _word_tokenizer


@pytest.fixture(scope="session")
def tiny_llama() -> Callable[..., Any]:
    """``tiny_llama(model_class, tokenizer, *, seed=0, **config)``: a tiny random Llama."""
    return _tiny_llama


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Tiny models: intra-op threads only add synchronisation, and on a busy 2-core
    # machine they make each step several times slower.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
