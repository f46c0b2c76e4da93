"""The hemex node: network edges, durable state, scheduling, delivery and alerts.

Data path, one sub-package per stage:
receive -> assemble -> clinical -> analysis -> report -> deliver -> alert
"""
