"""The project's one label convention, and explicit conversion from whatever a loader gives.

Canonical mapping: ``is_fake`` = 1 for fake (the positive class of every AUC), 0 for real.

Why explicit: ``datasets``' imagefolder sorts class folder names, so ``fake/`` and ``real/``
become ``ClassLabel(names=["fake", "real"])`` with fake = 0 -- the opposite of this project's
positive class. Integer labels from a loader are therefore never used as ``is_fake``; the
class *name* is converted with :func:`parse_label`. Save :func:`label_mapping` with every run.

>>> parse_label("Fake")
1
>>> is_fake_from_class_label(0, ["fake", "real"])  # datasets' index 0 is "fake"
1
"""

from __future__ import annotations

from collections.abc import Sequence

from llava_df.errors import DataError

REAL, FAKE = 0, 1
CLASS_NAMES = {REAL: "real", FAKE: "fake"}
NO_LABEL = -1  # is_fake of a caption record (--task caption): no Real/Fake label

# Folder names / label strings seen in public deepfake sets, mapped to is_fake. Kept short and
# exact (after lower-casing): a typo should fail, not be guessed.
LABEL_STRINGS: dict[str, int] = {
    "real": REAL,
    "original": REAL,  # FaceForensics++ original_sequences
    "pristine": REAL,
    "genuine": REAL,
    "fake": FAKE,
    "manipulated": FAKE,  # FaceForensics++ manipulated_sequences
    "deepfake": FAKE,
    "synthesis": FAKE,  # Celeb-DF Celeb-synthesis
}


def parse_label(value: object, *, where: str = "") -> int:
    """Class name (``real``/``fake`` or a synonym in LABEL_STRINGS, any case) -> is_fake.

    Integers are refused: 0/1 mean opposite things depending on who wrote them (datasets'
    alphabetical ClassLabel gives fake=0). ``where`` (file:line, folder) goes into the error.
    """
    at = f" in {where}" if where else ""
    if isinstance(value, bool) or not isinstance(value, str):
        raise DataError(
            f"Label {value!r}{at} is not a class name. Numeric labels are ambiguous (datasets' imagefolder "
            f"gives fake=0, this project fake=1): write one of {sorted(LABEL_STRINGS)} or use an "
            "'is_fake' column with 0/1."
        )
    key = value.strip().lower()
    if key not in LABEL_STRINGS:
        raise DataError(f"Unknown label {value!r}{at}. Expected one of {sorted(LABEL_STRINGS)} (any case).")
    return LABEL_STRINGS[key]


def parse_is_fake(value: object, *, where: str = "") -> int:
    """An explicit ``is_fake`` value (0/1, True/False, '0'/'1') -> 0 or 1."""
    if isinstance(value, str):
        value = value.strip()
    if value in (0, 1, "0", "1"):  # True/False compare equal to 1/0
        return int(value)
    at = f" in {where}" if where else ""
    raise DataError(f"is_fake value {value!r}{at} must be 0 (real) or 1 (fake).")


def is_fake_from_class_label(index: int, names: Sequence[str], *, where: str = "") -> int:
    """A loader's ClassLabel index -> is_fake, through the class *name* (never the index)."""
    if not 0 <= index < len(names):
        raise DataError(f"Class index {index}{' in ' + where if where else ''} is outside {list(names)}.")
    return parse_label(names[index], where=where or f"class folder {names[index]!r}")


def answer_for(is_fake: int, answer_real: str, answer_fake: str) -> str:
    """The answer word the model is trained to say for ``is_fake``."""
    return answer_fake if parse_is_fake(is_fake) else answer_real


def label_from_answer(text: str, answer_real: str, answer_fake: str, *, where: str = "") -> int:
    """A conversation's answer (``"Fake"``, ``"fake."``) -> is_fake; anything else is an error."""
    word = text.strip().rstrip(".!").strip().lower()
    for is_fake, answer in ((FAKE, answer_fake), (REAL, answer_real)):
        if word == answer.strip().lower():
            return is_fake
    at = f" in {where}" if where else ""
    raise DataError(
        f"Answer {text!r}{at} is neither {answer_real!r} nor {answer_fake!r}. Use the answer words of "
        "--answer_real/--answer_fake, or add a 'label' key (real/fake) to the record."
    )


def label_mapping(answer_real: str = "Real", answer_fake: str = "Fake") -> dict:
    """The mapping to save in a run's config, so a reader knows what 1 and the answers mean."""
    return {
        "is_fake": {name: idx for idx, name in CLASS_NAMES.items()},
        "positive_class": CLASS_NAMES[FAKE],
        "answers": {CLASS_NAMES[REAL]: answer_real, CLASS_NAMES[FAKE]: answer_fake},
        "accepted_label_strings": dict(LABEL_STRINGS),
    }
