# cython: language_level=3
"""PDQ hot loops (placeholder, filled by the PDQ work)."""
