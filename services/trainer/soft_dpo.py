"""DPO against each row's soft label: TRL's ``DPOTrainer`` with a cross-entropy loss on p.

TRL's DPO treats every row as a hard preference, but an RL-CAI row carries the feedback
model's probability ``p`` that ``chosen`` is better. With the implicit reward margin
``x = beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))`` the loss here is the
cross-entropy of the model's preference ``sigmoid(x)`` against ``p``::

    loss = -p * log sigmoid(x) - (1 - p) * log sigmoid(-x)

which is conservative DPO (Mitchell 2023) with a per-row smoothing ``epsilon = 1 - p``:
its minimum is at ``sigmoid(x) = p``, so a 0.6 label asks for a 0.6 preference instead of
pushing the margin without bound. Rows with ``p = 1`` train exactly as TRL's sigmoid loss.

Tokenisation, batching and the reference handling are TRL's; only the loss differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from trl import DPOTrainer

PROBABILITY = "chosen_probability"
"""The row's soft label: P(chosen is better), in [0, 1]."""


def soft_dpo_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    probability: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per-row cross-entropy of ``sigmoid(beta * margin)`` against ``probability``.

    ``*_logratios`` are ``log pi - log ref`` summed over each completion's tokens.
    """
    x = beta * (chosen_logratios - rejected_logratios)
    return -(probability * F.logsigmoid(x) + (1.0 - probability) * F.logsigmoid(-x))


class WithProbability:
    """Wraps a preference collator so batches also carry each row's ``chosen_probability``."""

    def __init__(self, collate: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collate = collate

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate(examples)
        batch[PROBABILITY] = torch.tensor([float(e[PROBABILITY]) for e in examples])
        return batch


class SoftDPOTrainer(DPOTrainer):
    """``DPOTrainer`` whose loss is :func:`soft_dpo_loss` on each row's ``chosen_probability``.

    The rows need a ``chosen_probability`` column (Charter's preference export has one).
    ``args.loss_type`` must be TRL's ``sigmoid`` (it is not used); a reference model, or
    precomputed reference log-probabilities, are required (no PEFT adapter trick).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.loss_types != ["sigmoid"] or self.f_divergence_type != "reverse_kl":
            raise ValueError("the soft DPO loss replaces TRL's plain sigmoid loss only")
        if self.ref_model is None and not self.precompute_ref_logps:
            raise ValueError("the soft DPO loss needs a reference model")
        self.data_collator = WithProbability(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if PROBABILITY not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, PROBABILITY]

    def _sequence_logps(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """Each sequence's completion log-probability, summed over its tokens ([2B]:
        chosen then rejected), through TRL's fused LM head (no full logits)."""
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            use_cache=False,
            fused_lm_head=True,
        )
        # Positions whose label is -100 come back as 0, so the sum is over the completion.
        return outputs.log_probs[:, -(completion_mask.size(1) - 1) :].sum(dim=1)

    def _compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool
    ) -> Any:
        if return_outputs:
            raise ValueError("the soft DPO trainer does not return model outputs")
        mode = "train" if self.model.training else "eval"
        chosen_logps, rejected_logps = self._sequence_logps(model, inputs).chunk(2)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            with torch.no_grad():
                ref_chosen, ref_rejected = self._sequence_logps(self.ref_model, inputs).chunk(2)
        chosen_logratios = chosen_logps - ref_chosen
        rejected_logratios = rejected_logps - ref_rejected
        probability = inputs[PROBABILITY].to(chosen_logratios.dtype)
        loss = soft_dpo_loss(chosen_logratios, rejected_logratios, probability, self.beta).mean()

        chosen = self.accelerator.gather(self.beta * chosen_logratios.detach())
        rejected = self.accelerator.gather(self.beta * rejected_logratios.detach())
        target = self.accelerator.gather(probability)
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(chosen.mean().item())
        metrics["rewards/rejected"].append(rejected.mean().item())
        metrics["rewards/margins"].append((chosen - rejected).mean().item())
        metrics["rewards/accuracies"].append((chosen > rejected).float().mean().item())
        # How far the model's preference is from the soft label (0 at the loss's minimum).
        gap = (torch.sigmoid(chosen - rejected) - target).abs().mean()
        metrics["rewards/probability_gap"].append(gap.item())
        return loss
