#!/usr/bin/env python3
"""Write synthetic DICOM test instances (no patient is real) into OUTDIR.

Usage: synth.py OUTDIR

Each file's header fields are printed as JSON (the same keys as
fields.py). Used by dicom/scp integration tests at test time; nothing
generated here is committed."""
import json
import os
import sys

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

ROOT = "1.2.826.0.1.3680043.10.1447.9"


def instance(n, charset, name, modality, accession, rows, cols, frames, bits, implicit):
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7" if modality == "OT" else (
        "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4")
    ds.SOPInstanceUID = f"{ROOT}.{n}.1.1"
    ds.StudyInstanceUID = f"{ROOT}.{n}"
    ds.SeriesInstanceUID = f"{ROOT}.{n}.1"
    ds.StudyDate = "20260101"
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.StudyDescription = "SYNTHETIC STUDY"
    ds.PatientName = name
    ds.PatientID = f"SYN-{n}"
    ds.IssuerOfPatientID = "RADBRIDGE-TEST"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.StudyID = str(n)
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    # A nested sequence, and a private element, before the pixel data.
    code = Dataset()
    code.CodeValue = "T-D3000"
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([code])
    block = ds.private_block(0x0009, "RADBRIDGE TEST", create=True)
    block.add_new(0x01, "LO", "private value")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    size = rows * cols * frames * (bits // 8)
    ds.PixelData = bytes((i * 7) % 251 for i in range(size))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = implicit
    ds.preamble = b"\0" * 128
    return ds


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    specs = [
        (1, "ISO_IR 100", "Gonçalves^José", "CT", "SYNACC1", 64, 64, 1, 16, False),
        (2, "ISO_IR 192", "Ødegård^Åse=王^小東", "MR", "SYNACC2", 32, 32, 1, 16, True),
        (3, "ISO_IR 100", "Frame^Müller", "OT", "SYNACC3", 32, 32, 4, 8, False),
        (4, "", "PLAIN^ASCII", "CT", "SYNACC4", 16, 16, 1, 16, False),
    ]
    fields = {}
    for spec in specs:
        ds = instance(*spec)
        path = os.path.join(out, f"synth{spec[0]}.dcm")
        ds.save_as(path, write_like_original=False)
        fields[path] = {
            "sop_class_uid": ds.SOPClassUID,
            "sop_instance_uid": ds.SOPInstanceUID,
            "study_uid": ds.StudyInstanceUID,
            "series_uid": ds.SeriesInstanceUID,
            "patient_id": ds.PatientID,
            "patient_name": str(ds.PatientName),
            "accession": ds.AccessionNumber,
            "modality": ds.Modality,
            "charset": spec[1],
            "transfer_syntax": ds.file_meta.TransferSyntaxUID,
        }
    json.dump(fields, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
