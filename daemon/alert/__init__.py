"""Alerts to on-call staff: the rule (rules.py), the content (alert_message.py) and the
durable hand-off to the outbox (dispatch.py)."""
