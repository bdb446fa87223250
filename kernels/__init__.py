"""Triton kernels under test, each variant with its engine's call signature.

Import these modules only after the device is chosen (diffcheck.backend.prepare): on a machine
without a GPU, ``TRITON_INTERPRET=1`` must be set before ``@triton.jit`` runs.
"""
