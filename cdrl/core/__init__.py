"""The method: config, noise schedules, networks, Langevin sampler, the CDRL training step,
guidance and optimizers (spec sections 1-7). Imports only ``cdrl.data`` and ``cdrl.io``."""
