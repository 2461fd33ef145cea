from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from breastcad.data.imaging import read_image, resize, unresize
from breastcad.errors import DataError
from tests.data.conftest import blob_image, save


def write_dicom(path, pixels: np.ndarray, photometric="MONOCHROME2", rle=True, window=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName, ds.PatientID = "Doe^Jane", "P-12345"
    ds.Modality, ds.SOPClassUID = "MG", meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    if rle:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_png_8_bit_gray_rgb_and_16_bit(tmp_path):
    gray = read_image(save(tmp_path / "g.png", blob_image(1)))
    assert gray.dtype == np.uint8 and gray.shape == (64, 80)
    rgb = read_image(save(tmp_path / "c.png", blob_image(1, rgb=True)))
    assert rgb.shape == (64, 80, 3)
    deep = (np.arange(64 * 80).reshape(64, 80) * 12).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    img = read_image(tmp_path / "d.png")
    assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1
    np.testing.assert_allclose(img * 65535, deep, atol=0.5)


def test_floating_point_and_32_bit_tiffs_are_scaled_onto_0_1(tmp_path):
    ramp = np.linspace(-3.0, 997.0, 64 * 80, dtype=np.float32).reshape(64, 80)
    expected = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    Image.fromarray(ramp).save(tmp_path / "f.tif")  # e.g. a processed mammogram export
    np.testing.assert_allclose(read_image(tmp_path / "f.tif"), expected, atol=1e-6)
    Image.fromarray(expected.astype(np.float32)).save(tmp_path / "unit.tif")  # already in [0, 1]
    np.testing.assert_array_equal(read_image(tmp_path / "unit.tif"), expected.astype(np.float32))
    Image.fromarray((ramp * 1000).astype(np.int32)).save(tmp_path / "i32.tif")
    np.testing.assert_allclose(read_image(tmp_path / "i32.tif"), expected, atol=1e-6)
    ramp[3, 4] = np.nan
    Image.fromarray(ramp).save(tmp_path / "nan.tif")
    with pytest.raises(DataError, match="NaN or infinite") as err:
        read_image(tmp_path / "nan.tif")
    assert "nan.tif" in str(err.value)


def test_pgm_reads_like_png(tmp_path):
    a = blob_image(2)
    np.testing.assert_array_equal(read_image(save(tmp_path / "x.pgm", a, "PPM")), a)


def test_rle_dicom_with_monochrome1_is_inverted(tmp_path):
    pixels = (np.arange(40 * 30).reshape(40, 30) * 50).astype(np.uint16)
    mono2 = read_image(write_dicom(tmp_path / "a.dcm", pixels))
    mono1 = read_image(write_dicom(tmp_path / "b.dcm", pixels, "MONOCHROME1"))
    assert pydicom.dcmread(tmp_path / "a.dcm").file_meta.TransferSyntaxUID == RLELossless
    assert mono2.dtype == np.float32 and mono2[0, 0] == 0.0 and mono2[-1, -1] == 1.0
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


def test_rle_dicom_decodes_with_the_compiled_decoder_pixel_for_pixel(tmp_path):
    """pylibjpeg-rle (installed with breastcad, first in pydicom's order) decodes RLE
    mammograms about 4x faster than pydicom's own Python decoder; both give the same pixels."""
    from pydicom.pixels.decoders import RLELosslessDecoder

    assert "pylibjpeg" in RLELosslessDecoder.available_plugins
    pixels = np.random.default_rng(0).integers(0, 4096, (300, 200)).astype(np.uint16)
    pixels[:100] = 1234  # runs as well as literals
    path = write_dicom(tmp_path / "r.dcm", pixels)
    for plugin in ("pylibjpeg", "pydicom"):
        ds = pydicom.dcmread(path)
        ds.pixel_array_options(decoding_plugin=plugin)
        np.testing.assert_array_equal(ds.pixel_array, pixels)
    expected = (pixels - pixels.min()) / float(pixels.max() - pixels.min())
    np.testing.assert_allclose(read_image(path), expected, atol=1e-6)


def test_dicom_window_is_applied(tmp_path):
    pixels = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (10, 1))
    img = read_image(write_dicom(tmp_path / "w.dcm", pixels, window=(1000, 500)))
    below, above = pixels < 750, pixels > 1250
    assert (img[below] == 0).all() and (img[above] == 1).all()


def _transcode(src, dst, syntax: str):
    """`src` re-encoded by GDCM (the decoder breastcad installs for compressed DICOM)."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    writer.SetFileName(str(dst))
    assert writer.Write()
    return dst


@pytest.mark.parametrize(
    "syntax, uid",
    [
        ("JPEGLosslessProcess14_1", "1.2.840.10008.1.2.4.70"),  # common in mammography
        ("JPEGLosslessProcess14", "1.2.840.10008.1.2.4.57"),
        ("JPEGLSLossless", "1.2.840.10008.1.2.4.80"),
        ("JPEG2000Lossless", "1.2.840.10008.1.2.4.90"),  # e.g. VinDr-Mammo
    ],
)
def test_losslessly_compressed_16_bit_dicom_reads_like_the_uncompressed_file(tmp_path, syntax, uid):
    """Mammograms are stored 12-16 bit, often JPEG lossless or JPEG 2000 compressed: those
    must decode (GDCM is a dependency), pixel for pixel."""
    pixels = np.random.default_rng(0).integers(0, 4096, (120, 90)).astype(np.uint16)
    plain = write_dicom(tmp_path / "plain.dcm", pixels, rle=False)
    packed = _transcode(plain, tmp_path / f"{syntax}.dcm", syntax)
    assert pydicom.dcmread(packed).file_meta.TransferSyntaxUID == uid
    np.testing.assert_array_equal(read_image(packed), read_image(plain))


def test_dicom_files_from_other_encoders_decode():
    """pydicom's own sample files, written by DCMTK, GDCM and others: lossless encodings of one
    image agree pixel for pixel; lossy JPEG stays close; what cannot be decoded says why."""
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    mr = read_image(folder / "MR_small.dcm")
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_array_equal(read_image(folder / name), mr)
    rgb = read_image(folder / "SC_rgb_rle.dcm")
    np.testing.assert_array_equal(read_image(folder / "SC_rgb_jpeg_gdcm.dcm"), rgb)
    baseline = read_image(folder / "SC_rgb_dcmtk_+eb+cr.dcm")  # JPEG baseline, lossy
    assert np.abs(baseline.astype(float) - rgb).mean() < 3
    with pytest.raises(DataError, match=r"unsupported DICOM pixel data \(JPEG Extended"):
        read_image(folder / "JPEG-lossy.dcm")  # 12-bit lossy JPEG: no installed decoder


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 30])
def test_bad_files_name_the_file(tmp_path, content):
    path = tmp_path / "bad image (1).png"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_truncated_png_is_a_data_error(tmp_path):
    good = save(tmp_path / "g.png", blob_image(3)).read_bytes()
    (tmp_path / "t.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_image(tmp_path / "t.png")


def test_a_multi_frame_dicom_is_refused_not_guessed_at(tmp_path):
    # a tomosynthesis volume: its first frame (what was read before) is the volume's edge
    volume = (np.arange(3 * 40 * 30).reshape(3, 40, 30) * 7).astype(np.uint16)
    path = write_dicom(tmp_path / "dbt.dcm", volume[0], rle=False)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames, ds.PixelData = 3, volume.tobytes()
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).pixel_array.shape == (3, 40, 30)
    with pytest.raises(DataError, match="multi-frame DICOM \\(3 frames") as err:
        read_image(path)
    assert str(path) in str(err.value) and err.value.kind == "unsupported"


def test_stacks_and_unread_formats_are_refused_but_a_pyramid_gives_its_first_page(tmp_path):
    # a TIFF stack or an animated PNG holds several pictures of one size: refused, as a
    # multi-frame DICOM is; a pyramid (smaller pages after the first) is its first page; a
    # GIF opens in Pillow but is not a format this tool reads (a folder scan skips it too)
    pages = [Image.fromarray(blob_image(seed, (40, 30))) for seed in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    pages[0].save(tmp_path / "cine.png", save_all=True, append_images=pages[1:])
    pages[0].save(tmp_path / "anim.gif", save_all=True, append_images=pages[1:])
    small = [p.resize((15, 20)) for p in pages[1:]]
    pages[0].save(tmp_path / "pyramid.tif", save_all=True, append_images=small)
    expected = {"stack.tif": "3-page TIFF", "cine.png": "3-page PNG", "anim.gif": "a GIF image"}
    for name, problem in expected.items():
        with pytest.raises(DataError, match=problem) as err:
            read_image(tmp_path / name)
        assert name in str(err.value) and err.value.kind == "unsupported"
    assert np.array_equal(read_image(tmp_path / "pyramid.tif"), np.asarray(pages[0]))


def test_an_array_that_is_not_a_decoded_image_is_named_not_classified():
    # the Python API took these and answered: a float picture in 0-255 as a white image, NaNs,
    # a volume as 64 channels
    from breastcad.data.imaging import check_decoded

    rng = np.random.default_rng(0)
    refused = {
        "values from": rng.random((64, 64)) * 255,
        "NaN or infinite": np.full((64, 64), np.nan),
        "a int16 array": (rng.random((64, 64)) * 1000).astype(np.int16),
        "a bool array": rng.random((64, 64)) > 0.5,
        "a 5x64x64 array is not an image": rng.random((5, 64, 64)),
        "a 64x64x4 array is not an image": np.zeros((64, 64, 4), np.uint8),
        "a 64 array is not an image": rng.random(64),
    }
    for problem, array in refused.items():
        with pytest.raises(DataError, match=problem):
            check_decoded(array)
    for fine in (rng.random((64, 64)).astype(np.float32), np.zeros((40, 30, 3), np.uint8)):
        assert check_decoded(fine) is not None


def test_images_too_small_to_classify_are_refused(tmp_path):
    # 8 px a side is taken; a 1 x 1 dot or a 5 px sliver (PNG or DICOM) is named and refused
    assert read_image(save(tmp_path / "ok.png", blob_image(4, (8, 8)))).shape == (8, 8)
    for path in (
        save(tmp_path / "dot.png", blob_image(4, (1, 1))),
        save(tmp_path / "sliver.png", blob_image(4, (5, 60))),
        write_dicom(tmp_path / "sliver.dcm", np.full((60, 5), 100)),
    ):
        with pytest.raises(DataError, match="too small to classify") as err:
            read_image(path)
        assert str(path) in str(err.value) and err.value.kind == "too_small"


def test_empty_and_missing(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_image(tmp_path / "e.png")
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "none.png")


@pytest.mark.parametrize("mode", ["pad", "crop", "stretch"])
def test_resize_modes(mode):
    img = np.full((40, 80), 200, np.uint8)
    out = resize(img, 32, mode)
    assert out.shape == (32, 32)
    if mode == "pad":  # aspect kept: content 16 rows high, black above and below
        assert out[0].max() == 0 and out[16].min() == 200
    else:
        assert out.min() == 200
    assert resize(img.astype(np.float32) / 255, 32, mode).dtype == np.float32


@pytest.mark.parametrize("mode", ["pad", "crop", "stretch"])
@pytest.mark.parametrize("shape", [(60, 100), (100, 60)])
def test_unresize_lays_a_map_back_where_the_image_was(mode, shape):
    """A square marked in an image, resized as the model sees it and laid back: it lands on
    the square again (for 'crop', only what the crop kept can come back)."""
    image = np.zeros(shape, dtype=np.float32)
    image[20:45, 25:50] = 1.0  # inside the centre crop of both shapes
    back = unresize(resize(image, (32, 32), mode), shape, mode)
    assert back.shape == shape
    found, marked = back > 0.5, image > 0.5
    assert (found & marked).sum() / (found | marked).sum() > 0.8
    if mode == "crop":  # what the crop cut off comes back empty
        edge = (slice(None), slice(0, 15)) if shape[1] > shape[0] else (slice(0, 15), slice(None))
        assert back[edge].max() == 0.0


def test_folders_expand_to_their_images_including_dicom_without_a_suffix(tmp_path):
    from breastcad.predict import expand_paths

    study = tmp_path / "study"
    save(study / "a.png", blob_image(1))
    save(study / "a_mask.png", blob_image(2))  # a BUSI mask, not an image to classify
    (study / "series").mkdir()
    write_dicom(study / "series" / "IM0001", np.full((16, 16), 900))  # no suffix, as exported
    (study / "notes").write_text("not an image")
    assert [p.relative_to(study).as_posix() for p in expand_paths([study])] == [
        "a.png",
        "series/IM0001",
    ]
    assert read_image(study / "series" / "IM0001").shape == (16, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images in this folder"):
        expand_paths([tmp_path / "empty"])
