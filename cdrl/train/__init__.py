"""Running the method: the training loop (one process or many), checkpoints and resume, and the
registry that maps ``method:`` in a config to CDRL or a baseline."""
