"""Stage: run the inference package on the selected series of a study."""
