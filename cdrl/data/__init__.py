"""Datasets: the 2-D toys (``toy``) and real image sets read from a configured root (``images``)."""

from cdrl.data.toy import TOY_DATASETS, ToyData, in_checkerboard, make_toy

__all__ = ["TOY_DATASETS", "ToyData", "in_checkerboard", "make_toy"]
