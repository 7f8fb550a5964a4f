"""DICOM (`.dcm`) files through pydicom: the pixels `decode_image` maps to [0, 1].

pydicom is an optional dependency (the `dicom` extra), imported only when a
`.dcm` file is read. The mapping follows the DICOM display pipeline (PS3.3
C.11): stored values -> Modality LUT (or Rescale Slope / Intercept) -> VOI
LUT (or the first Window Center / Width) -> [0, 1] by the output range of
that last step -> inverted for MONOCHROME1, so that 1 is always white.
"""

from __future__ import annotations

import numpy as np

#: What to run when pydicom is missing.
INSTALL = 'pip install "keras-freeze[dicom]"'

# Photometric interpretations read as grayscale / as colour (pydicom returns the
# YBR ones as RGB).
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")

# What to install for the pixel-data decoder of a compressed transfer syntax, by UID
# prefix (pydicom's own plugins; the first match wins). RLE and Deflate need nothing.
_EXTRA = f" (included in `{INSTALL}`)"
_DECODER_INSTALLS = (
    ("1.2.840.10008.1.2.4.9", "`pip install pylibjpeg pylibjpeg-openjpeg`" + _EXTRA),  # J2K
    ("1.2.840.10008.1.2.4.20", "`pip install pylibjpeg pylibjpeg-openjpeg`" + _EXTRA),  # HTJ2K
    ("1.2.840.10008.1.2.4.8", "`pip install pyjpegls`"),  # JPEG-LS
    ("1.2.840.10008.1.2.4.", "`pip install pylibjpeg pylibjpeg-libjpeg` (GPL-3.0)"),  # JPEG
)


def _pydicom():
    """The pydicom module (>= 3), or an ImportError naming the pip command."""
    try:
        import pydicom
        import pydicom.pixels
    except ImportError as error:
        raise ImportError(
            f"Reading DICOM (.dcm) files needs pydicom 3 (and pylibjpeg-openjpeg for JPEG 2000 "
            f"pixel data). Install them with `{INSTALL}`."
        ) from error
    return pydicom


def _missing_decoder(ds):
    """Why the pixel data of `ds` cannot be decoded here (a str naming what to install), or None."""
    from pydicom.pixels import get_decoder

    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is None:
        return "no Transfer Syntax UID in the file meta information"
    if not syntax.is_compressed:
        return None
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"pydicom cannot decode the transfer syntax {syntax.name} ({syntax})"
    if decoder.is_available:
        return None
    installs = [how for prefix, how in _DECODER_INSTALLS if syntax.startswith(prefix)]
    return (
        f"no pixel-data decoder for {syntax.name} ({syntax}) is installed. Install one: "
        f"{installs[0] if installs else 'see below'}; pydicom's decoders for it: "
        f"{'; '.join(decoder.missing_dependencies)}"
    )


def _header_problem(ds):
    """Why `ds` is not a single image `decode_image` reads (a str), or None."""
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not rows or not columns:
        return f"no image in the file (Rows={rows!r}, Columns={columns!r})"
    frames = ds.get("NumberOfFrames") or 1
    if int(frames) != 1:
        return f"a multi-frame image ({frames} frames); decode_image reads single images"
    photometric = ds.get("PhotometricInterpretation")
    if photometric not in _MONOCHROME + _COLOUR:
        return (
            f"photometric interpretation {photometric!r} is not supported (only "
            f"{', '.join(_MONOCHROME + _COLOUR)}); convert the file to one of them"
        )
    bits = ds.get("BitsStored")
    if not bits or not 1 <= int(bits) <= 16:
        return f"BitsStored={bits!r}; only integer pixels of 1 to 16 bits are supported"
    return _missing_decoder(ds)


def header_problem(path):
    """None if `path` looks like a DICOM image `decode_image` can read, else why not.

    Reads the header only (`stop_before_pixels`), so it is cheap; pixel data
    that is absent or corrupt is found when the file is decoded.
    """
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:  # noqa: BLE001 - any failure: not a DICOM file
        return f"{type(error).__name__}: {error}"
    return _header_problem(ds)


def _modality_range(ds):
    """(low, high): the values the Modality LUT (or rescale) gives for every storable value."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0, 2**bits - 1
    else:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return float(low), float(high)


def _voi_range(ds):
    """(low, high): the output range of the VOI step that `apply_voi_lut` applies."""
    voi = ds.get("VOILUTSequence")
    if voi and voi[0].get("LUTDescriptor") is not None and voi[0].get("LUTData") is not None:
        return 0.0, float(2 ** int(voi[0].LUTDescriptor[2]) - 1)
    # A window maps onto the modality output range; no VOI keeps that range.
    return _modality_range(ds)


def _monochrome_to_unit(stored, ds, path):
    """Stored grayscale values -> float32 in [0, 1], 1 white (MONOCHROME1 inverted)."""
    from pydicom.pixels import apply_modality_lut
    from pydicom.pixels import apply_voi_lut

    values = apply_voi_lut(apply_modality_lut(stored, ds), ds, index=0)
    low, high = _voi_range(ds)
    if not high > low:
        raise ValueError(
            f"Expected a DICOM output range of more than one value in {path!r}. Received: "
            f"[{low:.6g}, {high:.6g}] from its Modality / VOI LUT. Fix the file's LUT or "
            "Rescale Slope."
        )
    unit = (np.asarray(values, dtype=np.float64) - low) / (high - low)
    np.clip(unit, 0.0, 1.0, out=unit)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1.0 - unit
    return unit.astype(np.float32)


def decode(path):
    """`path`'s pixels as float32 in [0, 1]: `(H, W)` for grayscale, `(H, W, 3)` for colour.

    Raises an `OSError` naming the file when it cannot be read or decoded (not
    DICOM, no or corrupt pixel data, a compressed file whose decoder is not
    installed: the message names the package), a `ValueError` when its LUT
    gives a single output value.
    """
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path)
        problem = _header_problem(ds) or (
            None if "PixelData" in ds else "no Pixel Data element (7FE0,0010)"
        )
        if problem is None:
            stored = ds.pixel_array
    except Exception as error:  # noqa: BLE001 - any reader or decoder failure
        raise OSError(
            f"Cannot decode DICOM file {path!r}: {type(error).__name__}: {error}"
        ) from error
    if problem is not None:
        raise OSError(f"Cannot decode DICOM file {path!r}: {problem}")
    if ds.PhotometricInterpretation in _MONOCHROME:
        return _monochrome_to_unit(stored, ds, path)
    # Colour: pydicom gives RGB; scaled by the stored bit depth (no VOI for colour).
    unit = stored.astype(np.float64) / (2 ** int(ds.BitsStored) - 1)
    return np.clip(unit, 0.0, 1.0, out=unit).astype(np.float32)
