"""Real data from LLaVA's conversation format: JSONL (one record a line) or a JSON list.

A record::

    {"id": "ffpp_000_012", "image": "frames/000_012.png",
     "conversations": [{"from": "human", "value": "<image>\\nIs this face real or fake?"},
                       {"from": "gpt", "value": "Fake"}],
     "split": "train", "manipulation": "Deepfakes", "group": "000"}   # last three optional

With ``task="caption"`` (stage 1, LLaVA-Pretrain's format) the gpt answer is a free-text
caption, kept as the record's ``answer`` (``is_fake`` -1); a record then has exactly one human
and one gpt turn, as LLaVA's ``preprocess_plain`` requires.

The label is read from the gpt answer (``answer_real``/``answer_fake``, any case, trailing
period allowed) or from an explicit ``label`` key (real/fake); both present and disagreeing is
an error. The human turn becomes the record's prompt. Relative image paths are resolved
against ``image_root`` (default: the JSONL's folder).

Malformed records (bad JSON, missing keys, unknown answers) raise an error naming file:line --
the annotation must be fixed. Unreadable images are skipped and named in the LoadSummary.

>>> records, summary = load_jsonl_records("data/ffpp.jsonl", "Real", "Fake")
"""

from __future__ import annotations

import json
from pathlib import Path

from llava_df.data.dataset import REAL_MANIPULATION, UNKNOWN_MANIPULATION, Record, normalize_split
from llava_df.data.images import ImageLoadError, LoadSummary, load_rgb
from llava_df.data.labels import NO_LABEL, label_from_answer, parse_label
from llava_df.errors import DataError, DataNotFoundError

REQUIRED_KEYS = ("image", "conversations")


def _read(path: Path) -> list[tuple[str, object]]:
    """(where, parsed record) for each record; JSON errors name the line."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):  # LLaVA's own .json files are one list
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg}).") from err
        return [(f"{path}[{i}]", item) for i, item in enumerate(items)]
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"{path}:{lineno}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{lineno}: invalid JSON ({err.msg}). Each line must be one JSON object."
            ) from err
    return out


def _parse(
    where: str, rec: object, answer_real: str, answer_fake: str, task: str = "detect"
) -> tuple[str, int, str, str | None]:
    """-> (image, is_fake, prompt, caption or None) or a DataError naming ``where``."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}.")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise DataError(
            f"{where}: missing key(s) {missing}; a record needs {list(REQUIRED_KEYS)} (LLaVA conversation format)."
        )
    turns = rec["conversations"]
    if not isinstance(turns, list) or not all(
        isinstance(t, dict) and "from" in t and "value" in t for t in turns
    ):
        raise DataError(f"{where}: 'conversations' must be a list of {{'from': ..., 'value': ...}} turns.")
    human = [t["value"] for t in turns if t["from"] in ("human", "user")]
    gpt = [t["value"] for t in turns if t["from"] in ("gpt", "assistant")]
    if not human or "<image>" not in human[0]:
        raise DataError(f"{where}: the first human turn must contain '<image>'.")
    if task == "caption":
        if len(turns) != 2 or not gpt or not isinstance(gpt[0], str) or not gpt[0].strip():
            raise DataError(
                f"{where}: a caption record has one human turn (with <image>) and one gpt turn holding the caption "
                f"(LLaVA-Pretrain format); got {len(turns)} turns. Fix the record, or use --task detect for Real/Fake data."
            )
        return str(rec["image"]), NO_LABEL, human[0], gpt[0].strip()
    if not gpt and "label" not in rec:
        raise DataError(f"{where}: no gpt answer and no 'label' key; cannot tell real from fake.")
    is_fake = label_from_answer(gpt[0], answer_real, answer_fake, where=where) if gpt else None
    if "label" in rec:
        explicit = parse_label(rec["label"], where=where)
        if is_fake is not None and explicit != is_fake:
            raise DataError(f"{where}: 'label' {rec['label']!r} contradicts the answer {gpt[0]!r}.")
        is_fake = explicit
    return str(rec["image"]), is_fake, human[0], None


def load_jsonl_records(
    path: str | Path,
    answer_real: str = "Real",
    answer_fake: str = "Fake",
    *,
    image_root: str | Path | None = None,
    validate: bool = True,
    task: str = "detect",
) -> tuple[list[Record], LoadSummary]:
    """Records of every well-formed line whose image can be read."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(
            f"data_path {str(path)!r} does not exist. Expected a JSONL in LLaVA's conversation format."
        )
    root = Path(image_root) if image_root is not None else path.parent
    summary = LoadSummary(source=f"conversation file {path}")
    records = []
    for where, rec in _read(path):
        image, is_fake, prompt, caption = _parse(where, rec, answer_real, answer_fake, task)
        image_path = Path(image) if Path(image).is_absolute() else root / image
        if validate:
            try:
                load_rgb(image_path)
            except ImageLoadError as err:
                summary.skip(f"{where} {image_path}", err.reason)
                continue
        split = rec.get("split")
        records.append(
            Record(
                id=str(rec.get("id", where)),
                is_fake=is_fake,
                manipulation=str(
                    rec.get("manipulation") or (UNKNOWN_MANIPULATION if is_fake == 1 else REAL_MANIPULATION)
                ),
                split=None if split is None else normalize_split(split, where=where),
                path=str(image_path),
                prompt=prompt,
                group=None if rec.get("group") is None else str(rec["group"]),
                answer=caption,
            )
        )
    summary.loaded = len(records)
    summary.log()
    if not records:
        raise DataError(f"No usable record in {str(path)!r}. {summary.line()}")
    return records, summary
