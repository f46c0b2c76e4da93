"""Outbound delivery: the persistent outbox and its channels (DICOM, HL7, webhook, e-mail)."""
