#!/usr/bin/python3
"""Write COUNT synthetic CT instances (no patient is real) of about SIZE_KB
each into OUTDIR, spread over PARTS subdirectories (part0..partN-1) so that
parallel storescu processes can each take one.

Usage: gen_dicom.py OUTDIR SIZE_KB COUNT PARTS STUDY_UID

Explicit VR little endian, 16-bit MONOCHROME2 pixel data of random bytes
(one buffer reused; each file has its own UIDs). Run with /usr/bin/python3
(Debian's python3-pydicom)."""
import math
import os
import sys

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

out, size_kb, count, parts, study = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
side = max(8, int(math.sqrt(size_kb * 1024 / 2)))
pixels = os.urandom(side * side * 2)
for p in range(parts):
    os.makedirs(os.path.join(out, f"part{p}"), exist_ok=True)
for i in range(1, count + 1):
    s = (i - 1) % parts + 1
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = f"{study}.{s}.{i}"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = f"{study}.{s}"
    ds.StudyDate, ds.StudyTime = "20260310", "091500"
    ds.AccessionNumber = "BENCH" + study.rsplit(".", 1)[-1][-8:]
    ds.Modality = "CT"
    ds.StudyDescription = "BENCH CT"
    ds.SeriesDescription = f"AXIAL {s}"
    ds.SeriesNumber, ds.InstanceNumber = s, i
    ds.PatientName = "Bench^Synthetic"
    ds.PatientID = "BENCH0001"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = os.path.join(out, f"part{(i - 1) % parts}", f"i{i:05d}.dcm")
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    else:
        ds.is_implicit_VR, ds.is_little_endian = False, True
        pydicom.dataset.FileDataset(path, ds, file_meta=meta, preamble=b"\0" * 128).save_as(path, write_like_original=False)
