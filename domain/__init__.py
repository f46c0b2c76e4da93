"""The bottom layer shared by the node (``daemon/``) and image analysis (``inference/``).

Typed, immutable records of what crosses a stage boundary (the CT volume and hematoma
mask, measurements, clinical variables, predictions, the BRAIN score, a study's
analysis), the one list of predictor variables, the one exception tree, and the few
primitives both sides need (durable file writes, non-PHI study handles, the version).
It imports nothing from ``daemon/`` or ``inference/``.
"""
