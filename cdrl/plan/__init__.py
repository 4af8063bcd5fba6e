"""Planning the workflow: a preset's experiment matrix (runs, seeds, parts, the claims it
decides), the preflight check of staged resources, and the budget of a preset or of its claims
from measured and counted costs (``cdrl.measure``)."""
