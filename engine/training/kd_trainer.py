"""KDTrainer: a transformers Trainer that trains the student with the paper's joint KD loss.

The loss is ``alpha * CE + (1 - alpha) * T^2 * D(teacher || student)`` over response tokens (labels != -100),
computed by :func:`engine.training.losses.chunked_kd_loss` from the two models' final hidden states, so the
full-vocabulary logits of the batch are never held in memory (at Qwen's 151,936 tokens they would dominate it).
Everything else (optimizer, schedule, gradient accumulation, checkpoints, callbacks) is the stock Trainer's.

Rows are ``input_ids``, ``attention_mask``, ``labels`` (-100 on prompt and padding); :func:`pad_collator` pads
them. The trainer logs ``kd/ce`` and ``kd/divergence`` (token-weighted means since the last log) next to
``loss`` through ``Trainer.log``, so every callback sees them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, Trainer

from engine.contract.spec import DistillSpec
from engine.core import heartbeat
from engine.models.hidden_states import last_hidden_state, unwrap_peft
from engine.contract.metric_names import KD_CE, KD_DIVERGENCE
from engine.training.losses import IGNORE_INDEX, chunked_kd_loss
from engine.training_data.collate import pad_collator

try:  # TRL's forward redirection (from Lightning) keeps DDP/FSDP hooks working when we call the backbone
    from trl.models.utils import _ForwardRedirection
except ImportError:  # pragma: no cover - private TRL helper moved; single-process training does not need it
    _ForwardRedirection = None  # type: ignore[assignment,misc]

logger = logging.getLogger(__name__)




def _check_plain_head(model: nn.Module) -> None:
    """The chunked loss applies the LM head alone: refuse models that rescale or cap their logits after it."""
    cfg = getattr(unwrap_peft(model), "config", None)
    cfg = cfg.get_text_config() if cfg is not None else None
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier"):
        value = getattr(cfg, name, None)
        if value not in (None, 1, 1.0):
            raise ValueError(f"{type(model).__name__} post-processes its logits ({name}={value}); KDTrainer's "
                             "chunked loss supports plain LM heads (Qwen2, Llama, Mistral...).")


def output_size(model: nn.Module) -> int:
    """Rows of the model's LM head: the vocabulary the logits range over."""
    return int(unwrap_peft(model).get_output_embeddings().weight.shape[0])


def _init_trainer(trainer: Trainer, model: nn.Module, kwargs: dict) -> None:
    """Trainer.__init__ with a padding collator by default (the model's pad id, else the tokenizer's, else 0)."""
    if kwargs.get("data_collator") is None:
        pad_id = getattr(getattr(model, "config", None), "pad_token_id", None)
        processing = kwargs.get("processing_class")
        pad_id = getattr(processing, "pad_token_id", None) if pad_id is None else pad_id
        kwargs["data_collator"] = pad_collator(0 if pad_id is None else pad_id)
    Trainer.__init__(trainer, model=model, **kwargs)


class _HiddenStateLossTrainer(Trainer):
    """What the trainers whose loss is computed from hidden states share: the multi-process token scale and an
    evaluation step that returns the loss only (there are no logits to return: they are never materialised)."""

    def _token_loss_scale(self) -> int:
        """Ranks whose token sums add up in num_items_in_batch (tensor-parallel replicas excluded)."""
        if self.args.n_gpu > 1:
            return self.args.n_gpu
        get_tp_size = getattr(self, "get_tp_size", None)
        return self.accelerator.num_processes // (get_tp_size() if callable(get_tp_size) else 1)

    def _scaled_for_ranks(self, loss: Tensor, num_items_in_batch: Tensor | int | None) -> Tensor:
        """As Trainer.compute_loss does: num_items_in_batch counts every rank's tokens, and DDP averages grads."""
        if num_items_in_batch is not None and self.args.average_tokens_across_devices \
                and self.model_accepts_loss_kwargs:
            return loss * self._token_loss_scale()
        return loss

    def _through_wrapper(self, model: nn.Module, loss_fn: Callable[..., Any], inputs: dict[str, Tensor],
                         num_items_in_batch: Tensor | int | None) -> Any:
        """``loss_fn(student, inputs, n)``, called through the DDP/FSDP wrapper's forward when there is one, so
        its gradient hooks fire (as TRL's trainers do)."""
        student = self.accelerator.unwrap_model(model)
        if model is student or _ForwardRedirection is None:
            return loss_fn(student, inputs, num_items_in_batch)
        return _ForwardRedirection()(model, student, loss_fn, student, inputs, num_items_in_batch)

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[Tensor, None, None]:
        """Evaluation computes the training loss (there are no logits to return: they are never materialised)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


class KDTrainer(_HiddenStateLossTrainer):
    """Trainer whose loss is the joint CE + KD loss against a frozen teacher (same vocabulary), run live or read
    from its cached top-k targets (``teacher_targets``; the dataset then carries a ``row`` column)."""

    def __init__(
        self,
        model: PreTrainedModel | nn.Module,
        teacher_model: PreTrainedModel | nn.Module | None = None,
        kd_settings: DistillSpec | None = None,
        teacher_targets: Any = None,
        **kwargs: Any,
    ) -> None:
        if teacher_model is None and teacher_targets is None:
            raise ValueError("KDTrainer needs a teacher_model or cached teacher_targets.")
        self.teacher_targets = teacher_targets
        if teacher_model is None:
            _check_plain_head(model)
            _init_trainer(self, model, kwargs)
            self.kd_settings = kd_settings or DistillSpec()
            self.teacher_model = None
            self._kd_sums = {"train": [0.0, 0.0, 0.0], "eval": [0.0, 0.0, 0.0]}
            return
        student_vocab, teacher_vocab = output_size(model), output_size(teacher_model)
        if student_vocab != teacher_vocab:
            raise ValueError(
                f"The student predicts {student_vocab} tokens but the teacher {teacher_vocab}: logit distillation "
                "needs one shared vocabulary. Use sequence-level KD (train the student on teacher-generated "
                "answers) for models with different tokenizers."
            )
        _check_plain_head(model)
        _check_plain_head(teacher_model)
        _init_trainer(self, model, kwargs)
        self.kd_settings = kd_settings or DistillSpec()  # validated once, by the spec
        teacher_model.requires_grad_(False)
        teacher_model.eval()
        if getattr(teacher_model, "hf_device_map", None) is None:  # dispatched/quantized models stay put
            teacher_model.to(self.args.device)
        self.teacher_model = teacher_model
        # token-weighted sums since the last log: [ce * n, divergence * n, n] per mode
        self._kd_sums: dict[str, list[Tensor | float]] = {"train": [0.0, 0.0, 0.0], "eval": [0.0, 0.0, 0.0]}

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Joint KD loss of one (micro-)batch; normalised by num_items_in_batch when the Trainer passes it."""
        loss, ce, div = self._through_wrapper(model, self._kd_loss, inputs, num_items_in_batch)
        loss = self._scaled_for_ranks(loss, num_items_in_batch)
        n_tokens = (inputs["labels"][:, 1:] != IGNORE_INDEX).sum()
        sums = self._kd_sums["train" if model.training else "eval"]
        sums[0] = sums[0] + ce.detach() * n_tokens  # tensors, so no device sync per micro-batch
        sums[1] = sums[1] + div.detach() * n_tokens
        sums[2] = sums[2] + n_tokens
        return (loss, {"loss": loss, "kd_ce": ce, "kd_divergence": div}) if return_outputs else loss

    def _kd_loss(
        self, student: nn.Module, inputs: dict[str, Tensor], num_items_in_batch: Tensor | int | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]  # each [B, L]
        heartbeat.detail("student forward")  # what a slow step is busy with, if the heartbeat has to speak
        student_hidden = last_hidden_state(student, ids, mask)  # [B, L, H]
        s = self.kd_settings
        if self.teacher_targets is not None:
            heartbeat.detail("reading the cached teacher targets")
            from engine.training.chunked_losses import cached_kd_loss

            if "row" not in inputs:
                raise ValueError("cached teacher targets need a 'row' column in the dataset (with_row_numbers).")
            rows = inputs["row"].tolist()
            idx, t_lp, t_tail = self.teacher_targets.batch(rows)
            if s.method == "cross_tokenizer":  # another tokenizer: ULD on the aligned targets
                from engine.training.uld_loss import cached_uld_loss

                return cached_uld_loss(student_hidden, unwrap_peft(student).get_output_embeddings(), labels, t_lp,
                                       t_tail, self.teacher_targets.valid_batch(rows), alpha=s.alpha,
                                       temperature=s.temperature, chunk_size=s.chunk_size,
                                       num_items_in_batch=num_items_in_batch)
            return cached_kd_loss(student_hidden, unwrap_peft(student).get_output_embeddings(), labels, idx,
                                  t_lp, t_tail, alpha=s.alpha, temperature=s.temperature, divergence=s.divergence,
                                  beta=s.jsd_beta, chunk_size=s.chunk_size, num_items_in_batch=num_items_in_batch)
        heartbeat.detail("teacher forward")
        with torch.no_grad():
            teacher_hidden = last_hidden_state(self.teacher_model, ids, mask)  # [B, L, Ht]
        return chunked_kd_loss(
            student_hidden,
            teacher_hidden.to(student_hidden.device),
            unwrap_peft(student).get_output_embeddings(),
            unwrap_peft(self.teacher_model).get_output_embeddings(),
            labels,
            alpha=s.alpha,
            temperature=s.temperature,
            divergence=s.divergence,
            beta=s.jsd_beta,
            top_k=s.top_k,
            chunk_size=s.chunk_size,
            num_items_in_batch=num_items_in_batch,
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add kd/ce and kd/divergence (eval_kd/... during evaluation) to the Trainer's own logs."""
        is_eval = any(k.startswith("eval_") for k in logs)
        if is_eval or "loss" in logs:
            mode = "eval" if is_eval else "train"
            sums = torch.tensor([float(x) for x in self._kd_sums[mode]], dtype=torch.float64)  # one sync per log
            if self.accelerator.num_processes > 1:  # every rank logs at the same steps, so all reach this
                sums = self.accelerator.reduce(sums.to(self.args.device), reduction="sum")
            ce_sum, div_sum, n_tokens = sums.tolist()
            if n_tokens > 0:
                prefix = "eval_" if is_eval else ""
                logs[f"{prefix}{KD_CE}"] = ce_sum / n_tokens
                logs[f"{prefix}{KD_DIVERGENCE}"] = div_sum / n_tokens
            self._kd_sums[mode] = [0.0, 0.0, 0.0]
        super().log(logs, start_time)


class ChunkedSFTTrainer(_HiddenStateLossTrainer):
    """The stock Trainer with its causal-LM cross-entropy computed in chunks of response positions from the hidden
    states (:func:`engine.training.chunked_losses.chunked_ce_loss`): the same loss and gradients, without the batch's
    [B, L, V] logits, which dominate memory at Qwen's 151,936-token vocabulary."""

    def __init__(self, *args: Any, chunk_size: int = 256, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _check_plain_head(self.model)
        self.chunk_size = chunk_size

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        loss = self._scaled_for_ranks(self._through_wrapper(model, self._ce_loss, inputs, num_items_in_batch),
                                      num_items_in_batch)
        return (loss, {"loss": loss}) if return_outputs else loss

    def _ce_loss(self, student: nn.Module, inputs: dict[str, Tensor], num_items_in_batch: Tensor | int | None
                 ) -> Tensor:
        from engine.training.chunked_losses import chunked_ce_loss

        hidden = last_hidden_state(student, inputs["input_ids"], inputs["attention_mask"])  # [B, L, H]
        return chunked_ce_loss(hidden, unwrap_peft(student).get_output_embeddings(), inputs["labels"],
                               chunk_size=self.chunk_size, num_items_in_batch=num_items_in_batch)
