"""Stage: analyse a study: choose its series, build the volume, mask and measure the
hematoma, match clinical data, predict expansion, score BRAIN; hand the analysis on."""
