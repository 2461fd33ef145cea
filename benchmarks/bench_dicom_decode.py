"""DICOM decoding: `read_dicom` (decode, modality and VOI LUT, scaling) of an RLE-compressed
mammogram with pydicom's own RLE decoder against the compiled `pylibjpeg-rle` that breastcad
installs (first in pydicom's plugin order, so what every `read_image` call uses). The two are
alternated in the same process; medians and the ratio of medians are printed.

    .venv/bin/python benchmarks/bench_dicom_decode.py [--file X.dcm] [--repeats 7]

Without `--file` it reads the CBIS-DDSM mammogram in `../shared/data/cbis-ddsm` (RLE, 4432 x
2864, 16 bit) and, when that is absent, says so and writes a synthetic one of the same size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage

from breastcad.data import imaging

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cbis-ddsm"


def synthetic_mammogram(path: Path) -> Path:
    """A 4432 x 2864 16-bit RLE DICOM: smooth tissue, noise and a black background."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:4432, 0:2864]
    tissue = 3000 * np.exp(-((x / 2000.0) ** 2 + ((y - 2216) / 1800.0) ** 2))
    pixels = (tissue + rng.normal(0, 40, tissue.shape)).clip(0, 4095).astype(np.uint16)
    pixels[:, 2200:] = 0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


def timed_read(path: Path, plugin: str) -> tuple[float, np.ndarray]:
    """One `read_dicom` with pydicom's RLE decoding restricted to `plugin`."""
    original = pydicom.dcmread

    def dcmread(*args, **kwargs):
        ds = original(*args, **kwargs)
        ds.pixel_array_options(decoding_plugin=plugin)
        return ds

    pydicom.dcmread = dcmread
    try:
        start = time.perf_counter()
        pixels = imaging.read_dicom(path)
        return time.perf_counter() - start, pixels
    finally:
        pydicom.dcmread = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file
        if path is None:
            found = sorted(SHARED.rglob("*.dcm")) if SHARED.is_dir() else []
            if found:
                path = found[0]
            else:
                print(f"{SHARED} has no DICOM file; using a synthetic 4432 x 2864 RLE mammogram")
                path = synthetic_mammogram(Path(tmp) / "synthetic.dcm")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        print(
            f"{path.name}: {ds.Rows} x {ds.Columns}, {ds.BitsStored} bits, "
            f"{ds.file_meta.TransferSyntaxUID.name}"
        )
        times: dict[str, list[float]] = {"pydicom": [], "pylibjpeg": []}
        results = {}
        timed_read(path, "pylibjpeg")  # imports and first-touch costs outside the timings
        for _ in range(args.repeats):
            for plugin in times:
                seconds, results[plugin] = timed_read(path, plugin)
                times[plugin].append(seconds)
        same = np.array_equal(results["pydicom"], results["pylibjpeg"])
        print(f"\nsame pixels from both decoders: {same}\n")
        print("| RLE decoder | read_dicom seconds, median | range | speed vs pydicom |")
        print("|---|---|---|---|")
        reference = statistics.median(times["pydicom"])
        for plugin, values in times.items():
            median = statistics.median(values)
            print(
                f"| {plugin} | {median:.3f} | {min(values):.3f}-{max(values):.3f} | "
                f"{reference / median:.2f}x |"
            )


if __name__ == "__main__":
    main()
