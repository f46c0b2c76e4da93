"""The hemex node: network edges, durable state, scheduling, delivery and alerts.

Data path, one sub-package per stage:
receive -> assemble -> clinical -> analysis -> report -> deliver -> alert
"""

__version__ = "0.1.0"
