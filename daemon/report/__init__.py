"""Stage 5 outputs: the DICOM SEG and SR of a result (highdicom only), their validation
against the standard, and the outbound HL7 result.

- seg_builder.build_segmentation      BINARY SEG of the hematoma mask
- sr_builder.build_measurement_report TID 1500 Measurement Report (Comprehensive 3D SR)
- validation.validate_report_objects  read back + dciodvfy + DicomSRValidator
- validation.write_dataset            atomic write of a DICOM file
- codes                               every coded concept used, with the 99HEMEX scheme
"""
