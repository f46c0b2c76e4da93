"""The software version every report, model card and log line names."""

__version__ = "0.1.0"
