"""THE digit <-> category_id mapping. Nothing else in the package hard-codes it.

COCO files of the SVHN assignment use ``category_id`` 1..10 for the digits 0..9
(digit ``d`` has category ``d + 1``); torchvision detection models reserve label 0
for background, so the model's label space is exactly the COCO category space and
``num_classes`` is 11.

SVHN's own ``digitStruct.mat`` uses label 10 for the digit 0 (and 1..9 for 1..9);
:func:`svhn_label_to_digit` converts that.
"""
from __future__ import annotations

BACKGROUND = 0
NUM_DIGITS = 10
NUM_CLASSES = NUM_DIGITS + 1  # background + 10 digits, the model's num_classes
CATEGORY_IDS = tuple(range(1, NUM_DIGITS + 1))
# Optional extra model label (config ``letter_class``): a letter beside the number ("25D").
# The model learns it so that a D is not read as a 0, and drops it from what it returns, so
# no detection, COCO file or decoded number ever carries it.
LETTER = NUM_DIGITS + 1
NO_NUMBER = "-1"  # Task 2's label (pred.csv) for a photo where no digit is found


def num_classes(letter_class: bool = False) -> int:
    """The detector's ``num_classes``: background + 10 digits (+ the letter label)."""
    return NUM_CLASSES + int(bool(letter_class))


def digit_to_category(digit: int) -> int:
    """Digit 0..9 -> COCO category_id 1..10 (== model label)."""
    digit = int(digit)
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be 0..9, got {digit}")
    return digit + 1


def category_to_digit(category_id: int) -> int:
    """COCO category_id 1..10 (== model label) -> digit 0..9."""
    category_id = int(category_id)
    if category_id not in CATEGORY_IDS:
        raise ValueError(f"category_id must be 1..10 (digits 0..9), got {category_id}")
    return category_id - 1


def svhn_label_to_digit(label: int) -> int:
    """SVHN digitStruct label (1..10, where 10 means 0) -> digit 0..9."""
    label = int(label)
    if not 1 <= label <= 10:
        raise ValueError(f"SVHN label must be 1..10 (10 means digit 0), got {label}")
    return 0 if label == 10 else label


def coco_categories() -> list[dict]:
    """The ``categories`` list of a digit COCO file: ids 1..10 named "0".."9"."""
    return [{"id": c, "name": str(category_to_digit(c)), "supercategory": "digit"} for c in CATEGORY_IDS]
