#!/usr/bin/python3
"""Write one synthetic multi-series DICOM study (no patient is real) into OUTDIR.

Usage: study.py OUTDIR STUDY_UID PATIENT_ID ACCESSION SERIES INSTANCES [FIRST_SERIES]

Series alternate explicit and implicit VR little endian; the patient name is
non-ASCII (ISO_IR 192, UTF-8). Used by the daemon's end-to-end tests at test
time; nothing generated here is committed."""
import os
import sys

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

out, study, pid, acc = sys.argv[1:5]
nseries, ninst = int(sys.argv[5]), int(sys.argv[6])
first = int(sys.argv[7]) if len(sys.argv) > 7 else 1
parts = ["CHEST", "ABDOMEN", "CHEST", "HEAD"]
os.makedirs(out, exist_ok=True)
for s in range(first, first + nseries):
    implicit = s % 2 == 0
    for i in range(1, ninst + 1):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = f"{study}.{s}.{i}"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = f"{study}.{s}"
        ds.StudyDate = "20260310"
        ds.StudyTime = "091500"
        ds.AccessionNumber = acc
        ds.Modality = "CT"
        ds.StudyDescription = "CT CHEST W/O CONTRAST"
        ds.SeriesDescription = f"AXIAL {s}"
        ds.SeriesNumber = s
        ds.InstanceNumber = i
        ds.BodyPartExamined = parts[(s - 1) % len(parts)]
        ds.PatientName = "Müller-Şahin^Zoë"
        ds.PatientID = pid
        ds.IssuerOfPatientID = "NORTHWING"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "F"
        ds.ReferringPhysicianName = "Referrer^Sam"
        ds.StudyID = "1"
        ds.Rows, ds.Columns = 16, 16
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = bytes((i * 7 + k) % 251 for k in range(16 * 16 * 2))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta = meta
        path = os.path.join(out, f"s{s:02d}i{i:03d}.dcm")
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(path, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
        else:
            ds.is_implicit_VR, ds.is_little_endian = implicit, True
            pydicom.dataset.FileDataset(path, ds, file_meta=meta, preamble=b"\0" * 128).save_as(path, write_like_original=False)
