"""Turning results into what people read: the claims and their statistics, tables beside the
published numbers, figures and plots. Measuring lives in ``cdrl.measure``, planning what to run
in ``cdrl.plan``."""
