"""Stage: record a built report and queue everything it sends, in one transaction."""
