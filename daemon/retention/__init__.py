"""Stage: purge spool images and result folders after their retention period."""
