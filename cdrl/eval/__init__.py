"""Measuring samples: FID/KID/IS through torch-fidelity with offline Inception weights, the
domain feature extractors, class accuracy and the 2-D toy metrics."""
