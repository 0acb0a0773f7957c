"""CameraInfo for the 224×224 outputs, so depth, normals and labels can be projected like any camera image.

Every output grid is a square crop of the input image resized by ``crop.scale`` (:class:`CropMap`). Such
a crop-and-scale is an affine map of pixel coordinates, so the same pinhole model still describes the grid
once K and P are moved through it. Compared with image_proc:

- ``resize`` multiplies fx, cx (and fy, cy, Tx) by the scale. That treats pixel *edges* as the origin and
  puts the principal point (scale-1)/2 pixel off; here points use the pixel-centre convention
  (``CropMap.points_to_grid``: u' = (u - left + 0.5)·scale - 0.5), which is what a resampler does.
- ``crop_decimate`` keeps K and P and describes the crop through ``binning`` and ``roi`` instead, which only
  works for whole-number decimation; a 480→224 resize is not one.

So the input's own binning and ROI (REP 104: K and P are for the full, unbinned sensor) are first folded
into K and P, then the crop is applied, and the output describes the grid directly: binning 0 (none) and
an ROI that is the whole 224×224 grid with ``do_rectify`` false. A reader that follows REP 104 (e.g.
image_geometry's PinholeCameraModel) then uses K and P unchanged.

D and R are copied: distortion acts on normalised coordinates ((u - cx)/fx, ...), which an affine change of
pixel coordinates leaves untouched, and R is a rotation between camera frames, independent of pixels.
An uncalibrated camera (K all zero, REP 104) stays uncalibrated: zero matrices are passed through as zero.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from fourm_ros.pipeline.preprocess import CropMap
from fourm_ros.ros.conversion import copy_header


def _roi_is_set(info: CameraInfo) -> bool:
    roi = info.roi
    return bool(roi.x_offset or roi.y_offset or roi.width or roi.height)


def expected_image_size(info: CameraInfo) -> tuple[int, int]:
    """(width, height) of the image ``info`` belongs to: its ROI (or full size) divided by its binning."""
    width, height = (info.roi.width, info.roi.height) if _roi_is_set(info) else (info.width, info.height)
    return width // max(info.binning_x, 1), height // max(info.binning_y, 1)


def camera_info_matches(info: CameraInfo, width: int, height: int) -> bool:
    """True when ``info`` describes a ``width``×``height`` image; a mismatch means it belongs elsewhere."""
    return info.width > 0 and info.height > 0 and expected_image_size(info) == (width, height)


def _sensor_to_image(matrix: np.ndarray, info: CameraInfo) -> np.ndarray:
    """K or P of the full sensor → the same camera in the published image's pixels (ROI, then binning).

    Binned pixel j covers sensor pixels b·j .. b·j+b-1, so its centre is u = b·j + (b-1)/2, i.e.
    j = (u - offset + 0.5)/b - 0.5. An affine map u' = a·u + c of image coordinates changes the matrix
    rows as row_u' = a·row_u + c·row_w, which also moves P's Tx/Ty column correctly.
    """
    out = matrix.copy()
    for axis, (offset, binning) in enumerate(
        ((info.roi.x_offset, info.binning_x), (info.roi.y_offset, info.binning_y))
    ):
        if not _roi_is_set(info):
            offset = 0
        binning = max(binning, 1)
        scale, shift = 1.0 / binning, (0.5 - offset) / binning - 0.5
        out[axis] = scale * matrix[axis] + shift * matrix[2]
    return out


def _to_grid(matrix: np.ndarray, info: CameraInfo, crop: CropMap) -> np.ndarray:
    if matrix[2, 2] == 0:  # uncalibrated (REP 104: all zero) stays uncalibrated
        return np.zeros_like(matrix)
    return crop.intrinsics_to_grid(_sensor_to_image(matrix, info))


def camera_info_for_grid(info: CameraInfo, crop: CropMap, header: Header) -> CameraInfo:
    """The CameraInfo of a ``crop.size``² output computed from the input camera ``info`` (see module doc).

    ``header`` is the output's header (the input image's, copied); ``info`` must belong to the frame the
    crop was made from (:func:`camera_info_matches`), otherwise the result would be silently wrong.
    """
    if not camera_info_matches(info, crop.input_width, crop.input_height):
        width, height = expected_image_size(info)
        raise ValueError(
            f"CameraInfo describes a {width}×{height} image (width {info.width}, height {info.height}, "
            f"binning {info.binning_x}/{info.binning_y}, roi {info.roi.width}×{info.roi.height}) but the "
            f"frame is {crop.input_width}×{crop.input_height}; expected the CameraInfo of this image"
        )
    k = _to_grid(np.asarray(info.k, dtype=np.float64).reshape(3, 3), info, crop)
    p = _to_grid(np.asarray(info.p, dtype=np.float64).reshape(3, 4), info, crop)
    return CameraInfo(
        header=copy_header(header),
        height=crop.size,
        width=crop.size,
        distortion_model=info.distortion_model,
        d=list(info.d),
        k=k.ravel(),
        r=np.asarray(info.r, dtype=np.float64),
        p=p.ravel(),
        binning_x=0,
        binning_y=0,
        roi=RegionOfInterest(x_offset=0, y_offset=0, height=crop.size, width=crop.size, do_rectify=False),
    )
