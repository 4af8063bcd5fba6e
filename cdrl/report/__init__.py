"""Turning results into what people read: the experiment matrix of a preset, tables beside the
published numbers, figures, plots and the CDRL-vs-DRL speed bench."""
