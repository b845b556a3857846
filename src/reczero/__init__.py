"""reczero: recommenders that think before they recommend (RecZero, RecOne, R2ec).

Light on import: heavy libraries (torch, transformers, trl) are imported inside the functions
that need them, so that ``import reczero`` and ``reczero --help`` are instant.
"""

__version__ = "0.1.0"
