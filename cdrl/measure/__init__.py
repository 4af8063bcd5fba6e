"""Measuring what runs cost: the CDRL-vs-DRL speed bench (``cdrl bench``) and its A/B of
Langevin variants, FLOP counts of a run's work, and the GPU check's report. Uses ``cdrl.report``
for statistics and tables; ``cdrl.plan`` builds budgets on it."""
