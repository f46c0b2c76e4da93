"""What the IT person uses: status, dead letters, replay, metrics and health."""
