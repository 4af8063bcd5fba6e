"""The paper's downstream tasks on trained runs: out-of-distribution detection, compositional
generation and inpainting."""
