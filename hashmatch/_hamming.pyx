# cython: language_level=3
"""Hamming-distance kernels over packed binary codes (placeholder, filled by the core work)."""
