"""Decode every supported image to a numpy array, with clear errors for bad files.

Supported: PNG (8/16-bit, gray, RGB, palette), JPEG, TIFF, PGM/PPM, BMP, DICOM (including the
RLE-lossless and other transfer syntaxes pydicom decodes natively), and arrays inside MedMNIST
`.npz` files, addressed as `file.npz::<split>/<index>`.

`read_image` returns (H, W) for grayscale or (H, W, 3) for colour; 8-bit images stay uint8,
16-bit and DICOM images are float32 in [0, 1] (kept as float until the final resize), as are
floating-point and 32-bit TIFFs (their own range scaled onto [0, 1] unless already in it).

Example:
    >>> img = read_image("mdb001.pgm")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from breastcad.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm", ".ppm", ".bmp", ".dcm"}
NPZ_SEPARATOR = "::"
MAX_PIXELS = 200_000_000
"""Larger images are refused as possible decompression bombs (a 4432x2864 mammogram is 12.7M)."""
MIN_SIDE = 8
"""Smaller images are refused: too little to classify, however far they are upscaled (a 1 x 1
px upload got a confident answer). The smallest real inputs are 28 px (BreastMNIST) and IDC
edge patches (12 px in `../shared`)."""


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode one image (see module docstring); `DataError` names the file and the problem."""
    text = str(path)
    if NPZ_SEPARATOR in text:
        return _read_npz_item(text)
    p = Path(text)
    if not p.is_file():
        raise DataError("file not found", p)
    if p.stat().st_size == 0:
        raise DataError("empty file", p)
    try:
        f = open(p, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:  # permissions, a file locked or gone since it was listed
        raise DataError(f"cannot be opened ({exc.strerror or exc})", p) from exc
    with f:
        return _decode(f, p, p.suffix.lower() == ".dcm", max_pixels)


def decode_image(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image held in memory (an upload): never written to disk. `name` is only used
    in error messages and to recognise `.dcm` files without a preamble."""
    if not data:
        raise DataError("empty file", name)
    return _decode(io.BytesIO(data), name, name.lower().endswith(".dcm"), max_pixels)


def has_dicom_preamble(head: bytes) -> bool:
    """True when the first 132 bytes are a DICOM file's preamble and `DICM` magic."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _decode(f: BinaryIO, name: object, dicom_suffix: bool, max_pixels: int) -> np.ndarray:
    head = f.read(132)
    f.seek(0)
    if dicom_suffix or has_dicom_preamble(head):
        image = read_dicom(f, name, max_pixels)
    else:
        image = _read_pil(f, name, max_pixels)
    return _big_enough(image, name)


def _big_enough(image: np.ndarray, name: object) -> np.ndarray:
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise DataError(
            f"{width}x{height} pixels is too small to classify (at least {MIN_SIDE} a side)",
            name,
            kind="too_small",
        )
    return image


def _read_pil(f: BinaryIO, name: object, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                if im.width * im.height > max_pixels:
                    raise DataError(
                        f"{im.width}x{im.height} pixels is more than the limit of {max_pixels:,} "
                        "(a possible decompression bomb)",
                        name,
                        kind="too_large",
                    )
                _one_picture(im, name)
                im.load()
                return _pil_to_array(im, name)
    except DataError:
        raise
    except UnidentifiedImageError as exc:
        raise DataError(
            "not an image this tool reads (PNG, JPEG, TIFF, PGM, BMP, DICOM)", name, "unsupported"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"refused as a possible decompression bomb ({exc})", name, "too_large"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise DataError(f"corrupt or truncated image ({exc})", name) from exc


PIL_FORMATS = {"PNG", "JPEG", "MPO", "TIFF", "PPM", "BMP"}
"""Pillow's names of the formats read (PGM is PPM's; MPO is a camera JPEG with a preview)."""


def _one_picture(im: Image.Image, name: object) -> None:
    """Refuse what Pillow opens but this tool does not read (GIF, WebP...), and files holding
    several pictures of the image's size (a TIFF stack, an animated PNG): which one to
    classify would be a guess, as for a multi-frame DICOM. Smaller pages after the first (a
    pyramid's levels, a thumbnail) and an MPO's preview leave the first page, the image."""
    if im.format not in PIL_FORMATS:
        raise DataError(
            f"a {im.format or 'unknown'} image, not a format this tool reads "
            "(PNG, JPEG, TIFF, PGM, BMP, DICOM)",
            name,
            "unsupported",
        )
    frames = int(getattr(im, "n_frames", 1) or 1)
    if frames == 1 or im.format == "MPO":
        return
    size = im.size
    same = 0
    for index in range(frames):
        im.seek(index)
        same += im.size == size
    im.seek(0)
    if same > 1:
        raise DataError(
            f"a {frames}-page {im.format} ({same} pages of {size[0]}x{size[1]}); breastcad "
            "classifies single 2-D images, so save the page to classify as its own file",
            name,
            "unsupported",
        )


def _pil_to_array(im: Image.Image, name: object) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float32)
        if a.min() < 0 or a.max() > 65535:  # 32-bit integers: their own range, as DICOM
            return _full_range(a)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        return np.clip(a / top, 0, 1).astype(np.float32)
    if im.mode == "F":  # floating-point TIFF: kept if already in [0, 1], else its own range
        a = np.asarray(im, dtype=np.float32)
        if not np.isfinite(a).all():
            raise DataError("floating-point pixels include NaN or infinite values", name)
        return a if a.min() >= 0 and a.max() <= 1 else _full_range(a)
    if im.mode in ("L", "1"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if im.mode == "LA":
        return np.asarray(im.convert("L"), dtype=np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _full_range(values: np.ndarray) -> np.ndarray:
    """Values scaled from their minimum to their maximum onto [0, 1] (constant: zeros)."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return scaled.astype(np.float32)


def read_dicom(
    source: str | Path | BinaryIO, name: object | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Pixels of a DICOM file (a path or an open binary file): modality LUT, then VOI LUT or
    window, MONOCHROME1 inverted, scaled to float32 [0, 1]. Headers are not returned (see
    `breastcad.data.deid` for those)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = source if name is None else name
    ds = None
    try:
        ds = pydicom.dcmread(source)
        _check_dicom_image(ds, name, max_pixels)
        pixels = ds.pixel_array
    except InvalidDicomError as exc:
        raise DataError(f"not a DICOM file ({exc})", name, "unsupported") from exc
    except (NotImplementedError, RuntimeError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        which = f"{syntax.name}, {syntax}" if syntax is not None else "no transfer syntax"
        first, *plugins = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = " ".join([first, "; ".join(plugins)]) if plugins else first
        raise DataError(
            f"unsupported DICOM pixel data ({which}): {detail}", name, "unsupported"
        ) from exc
    except (AttributeError, ValueError, OSError, EOFError, KeyError, TypeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"corrupt DICOM file ({exc})", name) from exc
    return _dicom_values(ds, pixels)


def _check_dicom_image(ds: Any, name: object, max_pixels: int) -> None:
    """Refuse a DICOM file without pixel data, with several frames, or over `max_pixels`."""
    if "PixelData" not in ds:
        raise DataError("a DICOM file without pixel data (not an image)", name, "unsupported")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:  # which frame would be a guess: the first of a volume is its edge
        raise DataError(
            f"a multi-frame DICOM ({frames} frames: a tomosynthesis volume or a cine loop); "
            "breastcad classifies single 2-D images, so save the frame to classify as its own "
            "file",
            name,
            "unsupported",
        )
    if int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) > max_pixels:
        raise DataError(
            f"{ds.Rows}x{ds.Columns} pixels is more than the limit of {max_pixels:,}",
            name,
            "too_large",
        )


def _dicom_values(ds: Any, pixels: np.ndarray) -> np.ndarray:
    """Decoded pixels as the image to classify: colour as decoded (uint8, or float32 [0, 1]);
    gray through the modality LUT, then the VOI LUT or window, scaled to float32 [0, 1],
    MONOCHROME1 inverted."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if int(ds.get("SamplesPerPixel", 1)) > 1:  # colour (e.g. ultrasound): RGB as decoded
        if pixels.dtype == np.uint8:
            return pixels
        top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        return np.clip(pixels / top, 0, 1).astype(np.float32)
    values = apply_modality_lut(pixels, ds).astype(np.float32)  # exact for 16-bit values
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds, index=0).astype(np.float32)
    scaled = _full_range(values)
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled


@functools.lru_cache(maxsize=8)
def load_npz(path: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", p)
    try:
        with np.load(p) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"not a readable .npz file ({exc})", p) from exc


def _read_npz_item(ref: str) -> np.ndarray:
    path, _, item = ref.partition(NPZ_SEPARATOR)
    split, _, index = item.partition("/")
    arrays = load_npz(path)
    key = f"{split}_images"
    if key not in arrays or not index.isdigit() or int(index) >= len(arrays[key]):
        raise DataError(f"no image {item} in the file", path)
    return arrays[key][int(index)]


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """Any decoded image as 2-D float32 in [0, 1] (colour averaged), e.g. for hashing."""
    a = image.astype(np.float32)
    if image.dtype == np.uint8:
        a /= 255.0
    return a.mean(axis=2) if a.ndim == 3 else a


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A decoded image as uint8 (float images are in [0, 1])."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from a square side or a (height, width) pair."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def resize(image: np.ndarray, size: int | Sequence[int], mode: str = "pad") -> np.ndarray:
    """To `size` (a square side, or height and width): 'pad' keeps the aspect ratio and pads
    with black, 'crop' fills and centre-crops, 'stretch' ignores the aspect ratio. Float images
    are resized as float."""
    h, w = image.shape[:2]
    th, tw = as_hw(size)
    if mode == "stretch":
        return _pil_resize(image, tw, th)
    scale = (min if mode == "pad" else max)(th / h, tw / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = _pil_resize(image, new_w, new_h)
    if mode == "crop":
        top, left = (new_h - th) // 2, (new_w - tw) // 2
        return resized[top : top + th, left : left + tw]
    out = np.zeros((th, tw, *image.shape[2:]), dtype=resized.dtype)
    top, left = (th - new_h) // 2, (tw - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def unresize(values: np.ndarray, size: int | Sequence[int], mode: str = "pad") -> np.ndarray:
    """The inverse geometry of `resize`: a float map over a model input (H x W) laid back on
    an image of `size` (its height and width before `resize`). 'pad' drops the padding;
    'crop' puts zeros where the crop cut the image off (the model never saw it)."""
    th, tw = values.shape[:2]
    h, w = as_hw(size)
    values = values.astype(np.float32)
    if mode == "stretch":
        return _pil_resize(values, w, h)
    scale = (min if mode == "pad" else max)(th / h, tw / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    if mode == "pad":
        top, left = (th - new_h) // 2, (tw - new_w) // 2
        return _pil_resize(values[top : top + new_h, left : left + new_w], w, h)
    canvas = np.zeros((new_h, new_w), dtype=np.float32)
    top, left = (new_h - th) // 2, (new_w - tw) // 2
    canvas[top : top + th, left : left + tw] = values
    return _pil_resize(canvas, w, h)


def _pil_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.dtype == np.uint8:
        return np.asarray(
            Image.fromarray(image).resize((width, height), Image.BILINEAR, reducing_gap=3.0)
        )
    channels = [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[2])]
    out = [
        np.asarray(
            Image.fromarray(c.astype(np.float32), mode="F").resize(
                (width, height), Image.BILINEAR, reducing_gap=3.0
            )
        )
        for c in channels
    ]
    return out[0] if image.ndim == 2 else np.stack(out, axis=-1)


def is_colour(image: np.ndarray) -> bool:
    """True for a 3-channel image whose channels differ (RGB files of gray pixels are gray)."""
    if image.ndim != 3:
        return False
    return not (
        np.array_equal(image[..., 0], image[..., 1])
        and np.array_equal(image[..., 0], image[..., 2])
    )


def check_decoded(image: np.ndarray, name: object = "image array") -> np.ndarray:
    """`image` if it is what `read_image` gives (H x W, or H x W x 3 or x 1; uint8, or float
    with finite values in [0, 1]; at least 8 px a side), else a `DataError` saying what it
    is: an array from elsewhere (a float image in 0-255, a volume, NaNs) was classified
    as if it were one, as a white or meaningless picture."""
    image = np.asarray(image)
    shape = "x".join(map(str, image.shape))
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise DataError(
            f"a {shape} array is not an image (H x W, or H x W x 3 for colour; a volume or "
            "an RGBA array: give one 2-D picture, without alpha)",
            name,
        )
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise DataError(
            f"a {image.dtype} array: give uint8 (0-255) or float in [0, 1] (`read_image` "
            "gives one of them for every file it reads)",
            name,
        )
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise DataError("a float image with NaN or infinite values", name)
        low, high = float(image.min()), float(image.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise DataError(
                f"a float image with values from {low:g} to {high:g}: float images are read "
                "as [0, 1] (scale it, or give it as uint8)",
                name,
            )
    return _big_enough(image, name)


def prepare(
    image: np.ndarray, size: int | Sequence[int], mode: str = "pad", channels: int = 3
) -> np.ndarray:
    """A decoded image as the network sees it before normalisation: uint8 height x width x
    `channels` (colour averaged for 1 channel, gray repeated for 3). The one implementation
    used by the cache, prediction and the service."""
    if image.ndim == 3 and channels == 1:
        image = to_gray_float(image)
    out = to_uint8(resize(image, size, mode))
    if out.ndim == 2:
        out = out[..., None]
    if out.shape[2] != channels:
        out = np.repeat(out, channels, axis=2)
    return out
