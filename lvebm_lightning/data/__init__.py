"""Data: dataset generators (physical systems, toys), the user-file loader and the data module."""
