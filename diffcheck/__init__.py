"""diffcheck: differential verification of sparse-attention index kernels."""

__version__ = "0.1.0"
