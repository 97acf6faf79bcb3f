"""Data: dataset generators (physical systems, toys) and the ranges of their parameters, the user-file loader and
the data module."""
