"""Items -> a LLaVA training batch, with the loss on the answer tokens only.

How to call::

    collator = make_collator(processor, data_args, model_max_length=512)
    batch = collator([train_ds[0], train_ds[1]])
    # input_ids, attention_mask [B, T]; pixel_values [B, 3, H, W]; labels [B, T] (-100 but the answer);
    # is_fake [B]; answer_index [B] (position of the first answer token; its logit is at index - 1)
    model(**{k: v for k, v in batch.items() if k not in collator.extra_keys})
    fake_id, real_id = answer_token_ids(processor.tokenizer, ["Fake", "Real"])

The processor does the work: its image processor makes ``pixel_values`` and it expands
``<image>`` into the vision tower's number of image tokens. Labels are placed by matching, not
by counting: the target tokens (answer + EOS, tokenized in context) must be exactly the last
non-padding tokens of each row, or the collator raises -- the case LLaVA only warns about
("tokenization mismatch"), where a run silently trains on nothing.

EOS is supervised (``supervise_eos=True``): it is what makes ``generate()`` stop after the one
word, as in LLaVA's own training. Evaluation reads the first answer token's logits, so the EOS
term does not change the scores, only adds an easy token to the loss.

Nothing is truncated: cutting the prompt would change the question, cutting image or answer
tokens breaks the sample. A sequence over ``model_max_length`` is an error giving the counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llava_df.data.conversation import get_template
from llava_df.data.labels import answer_for
from llava_df.errors import DataError

IGNORE_INDEX = -100


def answer_token_ids(tokenizer, answers: Sequence[str], template: str = "llava_v1") -> list[int]:
    """First token id of each answer word *as it is tokenized after the template's prefix*.

    These are the ids evaluation compares (P(Fake) vs P(Real) at the answer position). Raises
    when two answers share their first token -- the scores could not tell them apart.
    """
    tmpl = get_template(template)
    eos = tokenizer.eos_token or ""
    ids = []
    for answer in answers:
        prefix, target = tmpl.build("<image>\nQ?", answer, eos)
        ids.append(_target_ids(tokenizer, prefix, target, tmpl.name)[0])
    if len(set(ids)) != len(ids):
        tokens = {a: tokenizer.convert_ids_to_tokens(i) for a, i in zip(answers, ids, strict=True)}
        raise DataError(
            f"Answers {list(answers)} do not start with distinct tokens ({tokens}); evaluation reads only the first "
            "answer token. Choose answer words whose first tokens differ (--answer_real / --answer_fake)."
        )
    return ids


def _target_ids(tokenizer, prefix: str, target: str, template: str) -> list[int]:
    """Token ids of ``target`` in the context of ``prefix`` (checks the boundary is clean)."""
    full = tokenizer(prefix + target)["input_ids"]
    head = tokenizer(prefix)["input_ids"]
    if full[: len(head)] != head or len(full) == len(head):
        raise DataError(
            f"Tokenization mismatch with template {template!r}: the prefix {prefix[-40:]!r} tokenizes differently alone "
            f"and followed by {target!r} ({tokenizer.convert_ids_to_tokens(head[-3:])} vs "
            f"{tokenizer.convert_ids_to_tokens(full[len(head) - 3 : len(head) + 2])}). Pick another --conv_template."
        )
    return full[len(head) :]


class DeepfakeCollator:
    """See the module docstring. ``extra_keys`` are batch entries the model must not receive."""

    extra_keys = ("is_fake", "answer_index")

    def __init__(
        self,
        processor,
        *,
        prompt: str,
        answer_real: str = "Real",
        answer_fake: str = "Fake",
        template: str = "llava_v1",
        model_max_length: int = 512,
        supervise_eos: bool = True,
        task: str = "detect",
        first_token_only: bool = False,
        answer_logits_only: bool = False,
    ):
        self.processor = processor
        self.task = task
        self.tokenizer = processor.tokenizer
        if self.tokenizer.pad_token_id is None:
            raise DataError(
                "The tokenizer has no pad token; set tokenizer.pad_token (e.g. to unk) before collating."
            )
        self.template = get_template(template)
        self.prompt, self.answer_real, self.answer_fake = prompt, answer_real, answer_fake
        self.model_max_length = model_max_length
        self.supervise_eos = supervise_eos
        self.image_token_id = processor.image_token_id
        self._cache: dict[tuple[str, str], list[int]] = {}
        self.answer_ids: list[int] = []
        if task == "detect":  # captions are not scored: no answer words to tell apart
            self.answer_ids = answer_token_ids(
                self.tokenizer, [answer_real, answer_fake], template
            )  # fail now
        # --answer_head classifier: the loss is 2-class cross-entropy at the first answer token only
        # (llava_df.model.answer_head); that token must then be one of the two answers.
        self.first_token_only = first_token_only and task == "detect"
        self.answer_logits_only = answer_logits_only

    def texts(self, item: dict) -> tuple[str, str]:
        """(prefix, target) of one item."""
        answer = item.get("answer") or answer_for(item["is_fake"], self.answer_real, self.answer_fake)
        return self.template.build(item.get("prompt") or self.prompt, answer, self.tokenizer.eos_token or "")

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        pairs = [self.texts(it) for it in items]
        enc = self.processor(
            images=[it["image"] for it in items],
            text=[p + t for p, t in pairs],
            padding="longest",
            return_tensors="pt",
        )
        input_ids, mask = enc["input_ids"], enc["attention_mask"]  # [B, T] each
        labels = torch.full_like(input_ids, IGNORE_INDEX)  # [B, T]
        answer_index = torch.empty(len(items), dtype=torch.long)  # [B]
        for i, (prefix, target) in enumerate(pairs):
            target_ids = self._cache.get((prefix, target))
            if target_ids is None:
                target_ids = self._cache[(prefix, target)] = _target_ids(
                    self.tokenizer, prefix, target, self.template.name
                )
            positions = mask[i].nonzero().flatten()  # non-padding, left or right padded alike
            self._check_length(i, items[i], input_ids[i, positions], len(target_ids))
            tail = positions[-len(target_ids) :]
            if input_ids[i, tail].tolist() != target_ids:
                raise DataError(
                    f"Tokenization mismatch in item {items[i].get('id')!r}: the processor's last tokens "
                    f"{self.tokenizer.convert_ids_to_tokens(input_ids[i, tail].tolist())} are not the answer "
                    f"{self.tokenizer.convert_ids_to_tokens(target_ids)}; no label would be placed right."
                )
            labels[i, tail] = input_ids[i, tail]
            if self.first_token_only:
                self._check_first_token(items[i], int(input_ids[i, tail[0]]))
                labels[i, tail[1:]] = IGNORE_INDEX
            elif not self.supervise_eos and target_ids[-1] == self.tokenizer.eos_token_id:
                labels[i, tail[-1]] = IGNORE_INDEX
            answer_index[i] = tail[0]
        out = dict(enc)
        out["labels"] = labels
        if self.answer_logits_only:
            # --answer_logits_only: the LM head runs from the logit before the batch's first answer token
            # on (logits_to_keep, a transformers forward argument), and the labels are cut to that window:
            # the loss, AnswerScores and the classifier head read nothing before it. With SmolLM2's
            # 49k vocabulary the full [B, T, V] logits were ~20% of a training step. answer_index stays
            # in input_ids' coordinates.
            start = int(answer_index.min()) - 1
            out["labels"] = labels[:, start:]  # [B, T - start]
            out["logits_to_keep"] = torch.arange(start, labels.shape[1])  # [T - start]
        out["is_fake"] = torch.tensor([int(it["is_fake"]) for it in items], dtype=torch.long)  # [B]
        out["answer_index"] = answer_index
        return out

    def _check_first_token(self, item: dict, token: int) -> None:
        if token not in self.answer_ids:
            got = self.tokenizer.convert_ids_to_tokens(token)
            raise DataError(
                f"item {item.get('id')!r}: its answer starts with token {got!r}, not with {self.answer_real!r} or "
                f"{self.answer_fake!r}. --answer_head classifier learns those two classes only: make every answer "
                "start with one of the two answer words, or use --answer_head generate."
            )

    def _check_length(self, i: int, item: dict, ids: torch.Tensor, n_target: int) -> None:
        n = len(ids)
        if n <= self.model_max_length:
            return
        n_image = int((ids == self.image_token_id).sum())
        what = f"item {item.get('id')!r} has {n} tokens: {n_image} image, {n - n_image - n_target} prompt, {n_target} answer"
        if n_image + n_target >= self.model_max_length:
            raise DataError(
                f"model_max_length={self.model_max_length} cannot hold even the image tokens and the answer ({what}). "
                f"Raise --model_max_length to at least {n} (the vision tower's patch count fixes the image tokens)."
            )
        raise DataError(
            f"{what}, over model_max_length={self.model_max_length}. Nothing is truncated (it would change the question "
            f"or drop the answer): raise --model_max_length to {n} or shorten the prompt."
        )


def make_collator(
    processor,
    data_args,
    model_max_length: int = 512,
    supervise_eos: bool = True,
    answer_head: str = "generate",
) -> DeepfakeCollator:
    """The collator configured from DataArguments (prompt, answers, conv_template) and the run's
    --answer_head (classifier: labels on the first answer token only)."""
    return DeepfakeCollator(
        processor,
        prompt=data_args.prompt,
        answer_real=data_args.answer_real,
        answer_fake=data_args.answer_fake,
        template=getattr(data_args, "conv_template", "llava_v1"),
        model_max_length=model_max_length,
        supervise_eos=supervise_eos,
        task=getattr(data_args, "task", None) or "detect",
        first_token_only=answer_head == "classifier",
        answer_logits_only=getattr(data_args, "answer_logits_only", False),
    )
