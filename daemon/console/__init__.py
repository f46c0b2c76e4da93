"""The web console: what the on-call doctor and the administrator look at in a browser.

Server-rendered pages (Flask and Jinja2, no front-end build), served on the node's HTTP
server as one blueprint (``blueprint.console_blueprint``). Every read goes through the
repositories of ``daemon.state``; the one action, retrying dead letters, goes through
``daemon.deliver.outbox.retry_dead_letters``.
"""
