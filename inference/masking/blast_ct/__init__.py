"""Masking method ``blast-ct``: BLAST-CT v1 (Monteiro et al. 2020) ported to Keras 3.

``masker.BlastCtMasker`` (with ``masker.BlastCtParameters``) is the method; the steps
are preparation.py (orientation, intracranial box, 1 mm image), ensemble.py (members
over tiles) and network.py (the network). The shipped weights, their cards, LICENSE and
NOTICE are in ``weights/``, made by convert_weights.py from the authors' state dicts.
Nothing is imported here, so that torch_state_dict.py runs without Keras.
"""
