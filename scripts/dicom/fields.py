#!/usr/bin/env python3
"""Print, as JSON, the header fields radbridge's SCP extracts, read with
pydicom, for each DICOM file given on the command line. Used by
dicom/scp tests as the expected values. Files pydicom cannot read, or
without SOP Class/Instance UID, are left out."""
import json
import sys

import pydicom


def text(ds, key):
    v = ds.get(key)
    if v is None:
        return ""
    if isinstance(v, pydicom.multival.MultiValue):
        return "\\".join(str(x) for x in v)
    return str(v)


out = {}
for path in sys.argv[1:]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if not text(ds, "SOPInstanceUID") or not text(ds, "SOPClassUID"):
            continue
        ts = ""
        if getattr(ds, "file_meta", None) is not None:
            ts = text(ds.file_meta, "TransferSyntaxUID")
        out[path] = {
            "sop_class_uid": text(ds, "SOPClassUID"),
            "sop_instance_uid": text(ds, "SOPInstanceUID"),
            "study_uid": text(ds, "StudyInstanceUID"),
            "series_uid": text(ds, "SeriesInstanceUID"),
            "patient_id": text(ds, "PatientID"),
            "patient_name": text(ds, "PatientName"),
            "accession": text(ds, "AccessionNumber"),
            "modality": text(ds, "Modality"),
            "charset": text(ds, "SpecificCharacterSet"),
            "transfer_syntax": ts,
        }
    except Exception:  # unreadable files are simply not expected
        continue
json.dump(out, sys.stdout, ensure_ascii=False)
