"""Stage: HL7 v2 intake over MLLP: listener, message store, parsing, observation mapping,
and the worker that applies stored messages to the clinical tables.

Public surface (wired by daemon/app.py through ``hl7_intake.Hl7Intake``):
``mllp_server.MllpListener``, ``message_processor.MessageProcessor``.
"""
