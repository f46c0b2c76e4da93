"""The job runner: claims durable jobs and runs each kind's stage handler."""
