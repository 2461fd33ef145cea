"""DICOM de-identification following the DICOM PS3.15 Basic Application Level Confidentiality
Profile (Annex E, Table E.1-1), before any header is written, logged, cached, shown or returned.

Actions, per attribute keyword: `X` remove, `Z` keep the attribute with an empty value, `D`
replace with a dummy (a keyed pseudonym for the patient id), `U` replace a UID with a new one
(the same new UID for the same old one under the same key, so studies and series stay
together). All private tags, curves (50xx) and overlays (60xx, which can hold burned-in text)
are removed; nested sequences are walked. `PatientIdentityRemoved` is set to YES and the method
recorded (code 113100, the basic profile). Dates are removed, not shifted (the profile without
the "retain longitudinal temporal information" option). Pixel data is not inspected: an image
with burned-in text stays identifying; `BurnedInAnnotation = YES` is reported as a warning.

Example:
    >>> deid = Deidentifier(key=b"site secret")  # doctest: +SKIP
    >>> changes = deid.apply(dataset)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import Counter
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from tqdm.auto import tqdm

from breastcad.data.imaging import has_dicom_preamble
from breastcad.errors import DataError

_X = """AcquisitionComments AcquisitionContextSequence AcquisitionDate AcquisitionDateTime
AcquisitionDeviceProcessingDescription AcquisitionTime ActualHumanPerformersSequence
AdditionalPatientHistory AdmissionID AdmittingDate AdmittingDiagnosesCodeSequence
AdmittingDiagnosesDescription AdmittingTime Allergies Arbitrary AuthorObserverSequence
BranchOfService CommentsOnThePerformedProcedureStep
ConfidentialityConstraintOnPatientDataDescription
ConsultingPhysicianName ContributionDescription CountryOfResidence CurrentPatientLocation
CustodialOrganizationSequence DataSetTrailingPadding DerivationDescription DeviceSerialNumber
DigitalSignaturesSequence DischargeDiagnosisDescription EthnicGroup FrameComments GantryID
GeneratorID HumanPerformerName HumanPerformerOrganization IconImageSequence
IdentifyingComments ImageComments ImagePresentationComments ImagingServiceRequestComments
Impressions InstanceCreationDate InstanceCreationTime InstitutionAddress
InstitutionalDepartmentName InstitutionCodeSequence InstitutionName
InterpretationApproverSequence InterpretationAuthor InterpretationDiagnosisDescription
InterpretationIDIssuer InterpretationRecorder InterpretationText InterpretationTranscriber
IssuerOfAdmissionID IssuerOfPatientID IssuerOfServiceEpisodeID MedicalAlerts
MedicalRecordLocator MilitaryRank ModifiedAttributesSequence ModifyingDeviceID
NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults Occupation OperatorsName
OperatorIdentificationSequence OrderCallbackPhoneNumber OrderEnteredBy OrderEntererLocation
OriginalAttributesSequence OtherPatientIDs OtherPatientIDsSequence OtherPatientNames
ParticipantSequence PatientAddress PatientAge PatientBirthName PatientBirthTime PatientComments
PatientInsurancePlanCodeSequence PatientMotherBirthName PatientPrimaryLanguageCodeSequence
PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference PatientSexNeutered
PatientSize PatientState PatientTelephoneNumbers PatientTransportArrangements PatientWeight
PerformedLocation PerformedProcedureStepDescription PerformedProcedureStepEndDate
PerformedProcedureStepEndTime PerformedProcedureStepID PerformedProcedureStepStartDate
PerformedProcedureStepStartTime PerformedStationAETitle PerformedStationName
PerformingPhysicianIdentificationSequence PerformingPhysicianName PersonAddress
PersonTelephoneNumbers PhysicianApprovingInterpretation PhysiciansOfRecord
PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence
PreMedication ProtocolName ReasonForStudy ReferencedPatientAliasSequence
ReferencedPatientPhotoSequence ReferencedPatientSequence ReferringPhysicianAddress
ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers RegionOfResidence
RequestAttributesSequence RequestedProcedureComments RequestedProcedureDescription
RequestedProcedureID RequestingPhysician RequestingService ResponsibleOrganization
ResponsiblePerson ResponsiblePersonRole ResultsComments ScheduledPerformingPhysicianName
ScheduledProcedureStepDescription ScheduledProcedureStepID ScheduledStationAETitle
ScheduledStationName SeriesDate SeriesDescription SeriesTime ServiceEpisodeDescription
ServiceEpisodeID SmokingStatus SpecialNeeds StationName StudyComments StudyDescription
TextComments TextString TopicAuthor TopicKeywords TopicSubject TopicTitle VerifyingObserverName
VerifyingObserverIdentificationCodeSequence VerifyingOrganization VisitComments
"""
_Z = """AccessionNumber ContentCreatorName ContentDate ContentTime PatientBirthDate PatientSex
ReferringPhysicianName StudyDate StudyID StudyTime"""
_D = "PatientID PatientName"
_U = """StudyInstanceUID SeriesInstanceUID SOPInstanceUID FrameOfReferenceUID
ReferencedSOPInstanceUID ReferencedFrameOfReferenceUID InstanceCreatorUID IrradiationEventUID
SynchronizationFrameOfReferenceUID StorageMediaFileSetUID TransactionUID DeviceUID
ConcatenationUID DimensionOrganizationUID RelatedFrameOfReferenceUID TargetUID
MediaStorageSOPInstanceUID"""

BASIC_PROFILE: dict[str, str] = {
    **{k: "X" for k in _X.split()},
    **{k: "Z" for k in _Z.split()},
    **{k: "D" for k in _D.split()},
    **{k: "U" for k in _U.split()},
}
"""Attribute keyword -> action (X remove, Z empty, D dummy, U new UID)."""

METHOD = "DICOM PS3.15 Basic Profile (breastcad)"
"""Fits DeidentificationMethod (LO, at most 64 characters)."""

SAFE_FIELDS = (
    "Modality",
    "BodyPartExamined",
    "Laterality",
    "ImageLaterality",
    "ViewPosition",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsStored",
    "NumberOfFrames",
    "Manufacturer",
    "PatientIdentityRemoved",
    "BurnedInAnnotation",
)
"""What `safe_header` returns: acquisition facts, never a person, date, place or UID."""


@dataclass
class Changes:
    """What de-identification changed in one file: attribute keywords only, never values."""

    removed: list[str] = field(default_factory=list)
    emptied: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    private_tags_removed: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "removed": " ".join(sorted(set(self.removed))),
            "emptied": " ".join(sorted(set(self.emptied))),
            "replaced": " ".join(sorted(set(self.replaced))),
            "private_tags_removed": self.private_tags_removed,
            "warnings": " ".join(self.warnings),
        }


class Deidentifier:
    """Apply the basic profile with a secret key: the same key gives the same patient
    pseudonyms and new UIDs (so a folder stays consistent); without a key a random one is
    made, and nobody (not even this process after it ends) can link outputs back."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key if key is not None else os.urandom(32)

    def pseudonym(self, value: str) -> str:
        digest = hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()
        return "patient-" + digest[:12]

    def new_uid(self, uid: str) -> str:
        """A 2.25 UID (a 128-bit number, as UUID-derived UIDs are) keyed on the old one."""
        digest = hmac.new(self.key, b"uid:" + str(uid).encode(), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def apply(self, ds: Dataset) -> Changes:
        """De-identify `ds` in place (file meta included) and say what changed."""
        changes = Changes()
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            changes.warnings.append("BurnedInAnnotation=YES: pixels may show identifying text")
        before = sum(1 for _ in _private_elements(ds))
        ds.remove_private_tags()
        changes.private_tags_removed = before
        self._walk(ds, changes)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = ds.get(
                "SOPInstanceUID", meta.MediaStorageSOPInstanceUID
            )
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        ds.DeidentificationMethodCodeSequence = [code]
        return changes

    def _walk(self, ds: Dataset, changes: Changes) -> None:
        for elem in list(ds):
            group = elem.tag.group
            if 0x5000 <= group <= 0x50FF or (0x6000 <= group <= 0x60FF):
                del ds[elem.tag]
                changes.removed.append(f"({group:04X},xxxx)")
                continue
            action = BASIC_PROFILE.get(elem.keyword)
            if action == "X":
                del ds[elem.tag]
                changes.removed.append(elem.keyword)
            elif action == "Z":
                if elem.value not in (None, "", b""):
                    elem.value = ""
                    changes.emptied.append(elem.keyword)
            elif action == "D":
                elem.value = self.pseudonym(str(elem.value)) if str(elem.value) else ""
                changes.replaced.append(elem.keyword)
            elif action == "U" and elem.value:
                elem.value = (
                    [self.new_uid(v) for v in elem.value]
                    if elem.VM > 1
                    else self.new_uid(elem.value)
                )
                changes.replaced.append(elem.keyword)
            elif elem.VR == "SQ":
                for item in elem.value:
                    self._walk(item, changes)


def _private_elements(ds: Dataset):
    for elem in ds.iterall():
        if elem.tag.is_private:
            yield elem


def safe_header(ds: Dataset, deid: Deidentifier | None = None) -> dict[str, Any]:
    """The header facts worth showing (modality, laterality, view, size...), taken from a
    de-identified copy: the one way a header reaches a log, a page or an API answer."""
    copy = Dataset()
    for elem in ds:
        if elem.keyword != "PixelData":
            copy.add(deepcopy(elem))
    copy.file_meta = deepcopy(getattr(ds, "file_meta", Dataset()))
    (deid or Deidentifier()).apply(copy)
    out = {k: copy.get(k) for k in SAFE_FIELDS if k in copy}
    out = {k: (str(v) if not isinstance(v, int) else v) for k, v in out.items()}
    syntax = getattr(copy.file_meta, "TransferSyntaxUID", None)
    if syntax is not None:
        out["TransferSyntax"] = syntax.name
    return out


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    with open(path, "rb") as f:
        return has_dicom_preamble(f.read(132))


def deidentify_folder(
    source: Path, out: Path, key: bytes | None = None, progress: bool = True
) -> tuple[list[dict[str, Any]], list[str]]:
    """De-identify every DICOM file under `source` (or the one file) into `out`.

    Output files are named by their new SOP Instance UID (input names and folders, such as
    CBIS-DDSM's `Mass-Test_P_00173_LEFT_CC`, can themselves identify a patient); a second file
    with the same UID (one image exported twice) is kept as `<uid>-copy2.dcm`, with a warning,
    not written over the first. Returns one
    report row per written file (output name and the attribute keywords changed) and the
    problems (unreadable files, named and skipped)."""
    source, out = Path(source), Path(out)
    if not source.exists():
        raise DataError("not found", source)
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    files = [f for f in files if is_dicom(f)]
    if not files:
        raise DataError("no DICOM files found", source)
    out.mkdir(parents=True, exist_ok=True)
    deid = Deidentifier(key)
    rows, problems = [], []
    seen: Counter[str] = Counter()  # new UIDs written, for copies of one image
    for path in tqdm(files, desc="de-identifying", unit="file", disable=not progress):
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # any unreadable file is reported and skipped
            problems.append(
                f"{path}: not a readable DICOM file ({exc.__class__.__name__}); skipped"
            )
            continue
        changes = deid.apply(ds)
        uid = ds.get("SOPInstanceUID") or deid.new_uid(str(path))
        row = {"file": f"{uid}.dcm"} | changes.summary()
        seen[uid] += 1
        if seen[uid] > 1:  # one image exported twice (or a damaged copy): both kept
            row["file"] = f"{uid}-copy{seen[uid]}.dcm"
            row["warnings"] = " ".join(
                filter(None, [row["warnings"], f"the same SOP Instance UID as {uid}.dcm"])
            )
        ds.save_as(out / row["file"])
        rows.append(row)
    return rows, problems
