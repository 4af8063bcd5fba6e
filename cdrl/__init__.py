"""cdrl-bench: Cooperative Diffusion Recovery Likelihood (Zhu et al., ICLR 2024) in PyTorch."""

__version__ = "0.1.0"
