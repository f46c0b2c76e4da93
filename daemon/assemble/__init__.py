"""Stage 2: decide when a series is complete and which series of a study to analyse."""
