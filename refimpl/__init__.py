"""The oracle: pure-torch, vectorized references of each kernel path's contract (DESIGN.md)."""
