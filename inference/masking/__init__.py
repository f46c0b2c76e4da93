"""Hematoma masking methods, interchangeable by configuration (see registry.py)."""
