"""Which attribute classifier scores a composition, and for which attributes, without importing
torch (the workflow plans with it; the classifier itself is ``cdrl.eval.attributes``).

    results/classifiers/<dataset>-attributes.pth     # rule attribute_classifier, + .pth.json

A composition on images of a dataset with attribute labels (``ATTRIBUTE_DATASETS``: CelebA 64)
is scored by the attribute CNN trained on that dataset; the 2-D toy needs none.
"""

from __future__ import annotations

__all__ = ["ATTRIBUTE_DATASETS", "classifier_file", "classifier_inputs", "split_condition",
           "condition_attributes"]

# Image datasets whose loader gives attribute labels (cdrl.data.images: ``attributes``).
ATTRIBUTE_DATASETS = ("celeba64",)


def classifier_file(dataset: str) -> str:
    """Where the workflow keeps the attribute classifier of ``dataset`` (under results/: it is
    made from the data, like a run)."""
    return f"results/classifiers/{dataset}-attributes.pth"


def classifier_inputs(dataset: str) -> list[str]:
    """The classifier a composition on ``dataset`` is scored with: ``[]`` for the toy."""
    return [classifier_file(dataset)] if dataset in ATTRIBUTE_DATASETS else []


def split_condition(condition: str) -> tuple[str, int]:
    """``Male`` -> (``Male``, 1); ``~Male`` or ``not-Male`` -> (``Male``, 0)."""
    name = condition.strip()
    for prefix in ("~", "not-"):
        if name.startswith(prefix):
            return name[len(prefix):], 0
    return name, 1


def condition_attributes(conditions: list[str]) -> list[str]:
    """The attributes named by ``conditions``, prefixes dropped, first occurrence order."""
    return list(dict.fromkeys(split_condition(c)[0] for c in conditions if c.strip()))
