"""Stage 1: receive CT images over DICOM and spool them durably."""
