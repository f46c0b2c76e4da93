"""Image analysis with no network code: CT volume, hematoma masking, measurements,
expansion prediction and clinical scores. Usable (and tested) without the daemon."""
