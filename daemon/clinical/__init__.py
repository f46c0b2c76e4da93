"""HL7 v2 intake: MLLP listener, message store, observation mapping, patient matching.

Public surface (wired by daemon/app.py through ``intake_service.ClinicalIntake``):
``mllp_server.MllpListener``, ``clinical_processor.ClinicalProcessor``,
``patient_matching.clinical_variables_for_study``.
"""
