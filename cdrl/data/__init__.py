"""Datasets. Issue 2 ships the 2-D toys; real image datasets come with the evaluation issue."""

from .toy import TOY_DATASETS, ToyData, in_checkerboard, make_toy

__all__ = ["TOY_DATASETS", "ToyData", "in_checkerboard", "make_toy"]
