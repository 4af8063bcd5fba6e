"""cdrl-bench: Cooperative Diffusion Recovery Likelihood (Zhu et al., ICLR 2024) in PyTorch.

Parts, with imports running one way (a part imports only those below it):

    cli                      the ``cdrl`` command
    report                   presets' experiment matrix, tables, figures, speed bench
    tasks, eval              downstream tasks; FID/IS/KID and other metrics
    train                    training loop, checkpoints, data-parallel ranks, method registry
    core                     the method: schedule, networks, Langevin sampler, CDRL step
    data, io                 datasets; atomic file writes

``tests/test_layout.py`` fails on an import that runs upward or in a circle.
"""

__version__ = "0.1.0"
