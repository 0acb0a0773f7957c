"""Pictures of 4M-21 results for people: colour maps, overlays, skeletons, legends, captions, sheets.

Shared by the CLI (PNG files a person opens) and the ROS node's ``*/color`` topics, so it uses numpy and
OpenCV only and is cheap enough to run on every frame. Images are uint8 RGB H×W×3 in and out. Text is
drawn with OpenCV's fonts; OpenCV 4 (e.g. on a Jetson) only knows ASCII, so every string goes through
`ascii_text` and pictures look the same everywhere.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from functools import cache

import cv2
import numpy as np

RANDOM_WEIGHTS_WARNING = "RANDOM WEIGHTS — outputs are meaningless"
DEPTH_LABEL = "relative depth (near → far)"

COLORMAPS: Mapping[str, int] = {
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "jet": cv2.COLORMAP_JET,
    "bone": cv2.COLORMAP_BONE,
}

# One colour per person (RGB), bright enough to stand out on photographs; cycled beyond eight people.
PERSON_COLORS = np.array(
    [
        [255, 64, 64],
        [64, 160, 255],
        [64, 220, 96],
        [255, 176, 32],
        [200, 96, 255],
        [0, 220, 220],
        [255, 96, 192],
        [176, 224, 32],
    ],
    dtype=np.uint8,
)
SIDES = ("left", "center", "right")

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = (28, 28, 30)
_TEXT = (240, 240, 240)
_MUTED_TEXT = (170, 170, 170)
_WARNING_RED = (205, 20, 20)
_ASCII_REPLACEMENTS = {
    "→": "->",
    "←": "<-",
    "—": "-",
    "–": "-",
    "…": "...",
    "‘": "'",
    "’": "'",
    "“": '"',
    "”": '"',
    "×": "x",
    "°": " deg",
    "\t": " ",
}


# ----------------------------------------------------------------------------------------------- checks


def _check_rgb(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Return `image` as a contiguous uint8 H×W×3 array, or raise saying what was wrong."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a numpy array (uint8 RGB H×W×3), got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must be uint8 RGB H×W×3, got dtype {image.dtype} and shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {image.shape})")
    return np.ascontiguousarray(image)


def _check_real(array: np.ndarray, what: str, ndim: int, *, floating: bool = False) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(array).__name__}")
    accepted = np.issubdtype(array.dtype, np.floating) or (
        not floating and np.issubdtype(array.dtype, np.integer)
    )
    if not accepted:
        kind = "floating-point numbers" if floating else "real numbers"
        raise ValueError(f"{what} must hold {kind} (float32 preferred), got dtype {array.dtype}")
    if array.ndim != ndim or 0 in array.shape:
        raise ValueError(f"{what} must be a non-empty {ndim}-D array, got shape {array.shape}")
    return array


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels must be a numpy array of class indices, got {type(labels).__name__}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 2 or 0 in labels.shape:
        raise ValueError(
            f"labels must be a non-empty H×W integer array, got dtype {labels.dtype} and shape {labels.shape}"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] (one palette row per class), found [{low}, {high}]"
        )
    return labels


def _check_palette(palette: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or not 0 < array.shape[0] <= 65536:
        raise ValueError(f"palette must be K×3 RGB rows with 1 <= K <= 65536, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
        raise ValueError("palette must hold integer RGB values in [0, 255]")
    return array.astype(np.uint8)


# ------------------------------------------------------------------------------------------------- text


def ascii_text(text: str) -> str:
    """`text` with every character OpenCV's fonts cannot draw replaced (arrows, dashes, accents, '?')."""
    out = []
    for char in str(text):
        char = _ASCII_REPLACEMENTS.get(char, char)
        if char.isascii():
            out.append(char if char.isprintable() or char == "\n" else " ")
            continue
        folded = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode("ascii")
        out.append(folded or "?")
    return "".join(out)


def _font_scale(width: int) -> float:
    """Font scale that keeps text legible on small (224 px) images and in proportion on large ones."""
    return float(np.clip(width / 640.0, 0.42, 1.6))


def _thickness(scale: float) -> int:
    return 1 if scale < 0.75 else 2


def _text_width(text: str, scale: float, thickness: int) -> int:
    return cv2.getTextSize(text, _FONT, scale, thickness)[0][0]


def _line_height(scale: float) -> int:
    """Pixel height of one text line including spacing (cap height ≈ 22 px at scale 1)."""
    return round(34 * scale)


def _wrap(text: str, max_width: int, scale: float, thickness: int) -> list[str]:
    """Greedy word wrap by rendered width; words wider than a line are split."""
    lines: list[str] = []
    for paragraph in ascii_text(text).split("\n"):
        line = ""
        for word in paragraph.split():
            while _text_width(word, scale, thickness) > max_width and len(word) > 1:
                cut = len(word) - 1
                while cut > 1 and _text_width(word[:cut], scale, thickness) > max_width:
                    cut -= 1
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cut])
                word = word[cut:]
            candidate = f"{line} {word}" if line else word
            if _text_width(candidate, scale, thickness) <= max_width:
                line = candidate
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return lines


def _fit(text: str, max_width: int, scale: float, thickness: int) -> str:
    """`text` shortened with '...' so it fits on one line."""
    if _text_width(text, scale, thickness) <= max_width:
        return text
    while text and _text_width(text + "...", scale, thickness) > max_width:
        text = text[:-1]
    return text + "..."


def _draw_text(
    canvas: np.ndarray, text: str, x: int, baseline: int, scale: float, color, thickness: int
) -> None:
    cv2.putText(canvas, text, (x, baseline), _FONT, scale, color, thickness, cv2.LINE_AA)


def _text_block(
    lines: Sequence[str],
    width: int,
    scale: float,
    color=_TEXT,
    background=_BACKGROUND,
    align: str = "left",
) -> np.ndarray:
    """A width-wide panel with `lines` drawn on `background`."""
    thickness = _thickness(scale)
    step = _line_height(scale)
    pad = max(4, step // 3)
    panel = np.empty((2 * pad + step * len(lines), width, 3), np.uint8)
    panel[:] = background
    for row, line in enumerate(lines):
        x = pad
        if align == "center":
            x = max(pad, (width - _text_width(line, scale, thickness)) // 2)
        _draw_text(panel, line, x, pad + row * step + int(0.72 * step), scale, color, thickness)
    return panel


# ------------------------------------------------------------------------------------------------ depth


@cache
def colormap_lut(colormap: str = "turbo") -> np.ndarray:
    """The 256×3 uint8 RGB lookup table of a named colour map (index 0 = low end)."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; choose one of {sorted(COLORMAPS)}")
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    lut = cv2.applyColorMap(ramp, COLORMAPS[colormap])[:, 0, ::-1].copy()
    lut.flags.writeable = False
    return lut


def robust_range(depth: np.ndarray, percentiles: tuple[float, float] = (2.0, 98.0)) -> tuple[float, float]:
    """Low/high percentiles of the finite values: the colour range that one outlier cannot wash out.

    Returns (0.0, 1.0) when no value is finite. Large maps are subsampled to about 260k values.
    """
    depth = _check_real(depth, "depth", 2)
    low_pct, high_pct = percentiles
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    stride = max(1, int(np.ceil(np.sqrt(depth.size / 2**18))))
    values = depth[::stride, ::stride].astype(np.float32, copy=False)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [low_pct, high_pct])
    return float(low), float(high)


def colorize_depth(
    depth: np.ndarray,
    *,
    lo: float | None = None,
    hi: float | None = None,
    colormap: str = "turbo",
    invalid_color: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Relative depth → colour: `lo` maps to the colour map's start, `hi` to its end.

    Missing bounds come from `robust_range` (percentiles 2–98); NaN/inf pixels get `invalid_color`.
    """
    depth = _check_real(depth, "depth", 2)
    lut = colormap_lut(colormap)
    if lo is None or hi is None:
        auto_lo, auto_hi = robust_range(depth)
        lo = auto_lo if lo is None else lo
        hi = auto_hi if hi is None else hi
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"depth range must be finite with lo <= hi, got lo={lo}, hi={hi}")
    values = depth.astype(np.float32, copy=False)
    span = float(hi) - float(lo)
    scale = 255.0 / span if span > 0 else 0.0
    # Clip to [lo, hi] first: convertScaleAbs rounds and saturates, but takes |x| of negatives.
    index = cv2.convertScaleAbs(np.clip(values, lo, max(lo, hi)), alpha=scale, beta=-float(lo) * scale)
    rgb = cv2.LUT(cv2.merge([index, index, index]), lut.reshape(256, 1, 3))
    invalid = ~np.isfinite(values)
    if invalid.any():
        rgb[invalid] = invalid_color
    return rgb


def _format_value(value: float) -> str:
    return f"{value:.3g}"


def with_colorbar(
    rgb: np.ndarray,
    lo: float,
    hi: float,
    label: str = DEPTH_LABEL,
    *,
    colormap: str = "turbo",
) -> np.ndarray:
    """`rgb` with a labelled horizontal colour bar appended below (values at both ends and the middle)."""
    rgb = _check_rgb(rgb)
    width = rgb.shape[1]
    scale = _font_scale(width)
    thickness = _thickness(scale)
    pad = max(4, _line_height(scale) // 3)
    bar_height = max(8, _line_height(scale) // 2)
    bar_width = max(1, width - 2 * pad)
    lut = colormap_lut(colormap)
    bar_index = np.linspace(0, 255, bar_width).round().astype(np.uint8)
    bar = np.empty((pad + bar_height, width, 3), np.uint8)
    bar[:] = _BACKGROUND
    bar[pad:, pad : pad + bar_width] = lut[bar_index][None, :, :]

    step = _line_height(scale)
    ticks = np.empty((step, width, 3), np.uint8)
    ticks[:] = _BACKGROUND
    baseline = int(0.72 * step)
    low_text, mid_text, high_text = (_format_value(v) for v in (lo, (lo + hi) / 2.0, hi))
    _draw_text(ticks, low_text, pad, baseline, scale, _TEXT, thickness)
    mid_x = (width - _text_width(mid_text, scale, thickness)) // 2
    _draw_text(ticks, mid_text, mid_x, baseline, scale, _TEXT, thickness)
    high_x = width - pad - _text_width(high_text, scale, thickness)
    _draw_text(ticks, high_text, high_x, baseline, scale, _TEXT, thickness)

    caption = _text_block(
        _wrap(label, width - 2 * pad, scale, thickness), width, scale, _MUTED_TEXT, align="center"
    )
    return np.concatenate([rgb, bar, ticks, caption], axis=0)


# ---------------------------------------------------------------------------------------------- normals


def normals_to_rgb(normals: np.ndarray) -> np.ndarray:
    """Unit normals in [-1, 1] → colour by (n + 1) / 2 · 255 per axis; non-finite pixels become black."""
    normals = _check_real(normals, "normals", 3, floating=True)
    if normals.shape[2] != 3:
        raise ValueError(f"normals must be H×W×3 (x, y, z per pixel), got shape {normals.shape}")
    values = normals.astype(np.float32, copy=False)
    rgb = cv2.convertScaleAbs(np.clip(values, -1.0, 1.0), alpha=127.5, beta=127.5)  # rounds to nearest
    finite = np.isfinite(values)
    if not finite.all():  # the per-pixel reduction is the slow part, so only when needed
        rgb[~finite.all(axis=2)] = 0
    return rgb


def optical_normals_to_rgb(normals: np.ndarray) -> np.ndarray:
    """Camera-optical-frame normals (z forward) coloured like the usual normal map, where a surface facing
    the viewer (z towards the camera) is blue: (x, y, -z) through ``normals_to_rgb``."""
    normals = _check_real(normals, "normals", 3, floating=True)
    return normals_to_rgb(normals * np.array([1.0, 1.0, -1.0], dtype=np.float32))


# ----------------------------------------------------------------------------------------- segmentation


def present_classes(labels: np.ndarray) -> list[tuple[int, float]]:
    """(class index, pixel share in [0, 1]) for every class present, largest share first."""
    if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 2:
        raise ValueError("labels must be an H×W integer numpy array")
    if labels.size == 0 or labels.min() < 0 or labels.max() > 65535:
        raise ValueError("labels must be non-empty class indices in [0, 65535]")
    counts = np.bincount(labels.ravel())
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    return [(int(c), float(counts[c]) / labels.size) for c in order]


def segmentation_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray | Sequence[Sequence[int]],
    *,
    alpha: float = 0.5,
    boundaries: bool = True,
) -> np.ndarray:
    """Class colours blended over `image` (alpha 0 = image unchanged, 1 = colours only).

    `labels` must cover the same field of view as `image`; a different resolution is nearest-resized.
    `boundaries` darkens the colour along class borders so neighbouring regions stay apart.
    """
    image = _check_rgb(image)
    palette = _check_palette(palette)
    labels = _check_labels(labels, len(palette))
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = image.shape[:2]
    colours, full = palette[labels], labels
    if labels.shape != (height, width):  # nearest by pixel centre, so small label maps do not drift
        colours = cv2.resize(colours, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
        if boundaries:
            full = cv2.resize(
                labels.astype(np.uint16), (width, height), interpolation=cv2.INTER_NEAREST_EXACT
            )
    if boundaries:
        edge = np.zeros((height, width), np.uint8)
        edge[:, 1:] |= full[:, 1:] != full[:, :-1]
        edge[1:, :] |= full[1:, :] != full[:-1, :]
        cv2.copyTo(cv2.convertScaleAbs(colours, alpha=1.0 / 3.0), edge, colours)
    return cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0)


def segmentation_legend(
    labels: np.ndarray,
    names: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]],
    *,
    max_entries: int = 12,
    row_height: int = 24,
    width: int | None = None,
) -> np.ndarray:
    """A panel listing the classes present (colour swatch, name, pixel share), largest first.

    Beyond `max_entries` entries the rest is summarised as "+N more (x%)". With `width` the entries flow
    left to right in as many columns as fit that width (for a legend under an image); without it they
    form one column.
    """
    palette = _check_palette(palette)
    labels = _check_labels(labels, len(palette))
    if len(names) < len(palette):
        raise ValueError(f"names has {len(names)} entries but the palette has {len(palette)} classes")
    if max_entries < 1 or row_height < 8:
        raise ValueError(f"max_entries must be >= 1 and row_height >= 8, got {max_entries}, {row_height}")
    entries = present_classes(labels)
    shown = entries if len(entries) <= max_entries else entries[: max_entries - 1]
    rows = [(palette[c], f"{ascii_text(names[c])}  {share * 100:.1f}%") for c, share in shown]
    rest = entries[len(shown) :]
    if rest:
        rows.append((None, f"+{len(rest)} more ({sum(s for _, s in rest) * 100:.1f}%)"))

    scale = row_height / 40.0
    thickness = _thickness(scale)
    pad = max(4, row_height // 4)
    swatch = row_height - 2 * max(2, row_height // 6)
    text_x = swatch + pad
    entry_width = text_x + max(_text_width(text, scale, thickness) for _, text in rows) + 2 * pad
    if width is None:
        columns, panel_width = 1, pad + entry_width
    else:
        if width < pad + text_x + 16:
            raise ValueError(f"width {width} is too narrow for a legend with row_height {row_height}")
        columns = int(np.clip((width - pad) // entry_width, 1, len(rows)))
        panel_width = width
    column_width = (panel_width - pad) // columns
    panel = np.empty((2 * pad + row_height * -(-len(rows) // columns), panel_width, 3), np.uint8)
    panel[:] = _BACKGROUND
    for i, (colour, text) in enumerate(rows):
        left = pad + (i % columns) * column_width
        top = pad + (i // columns) * row_height
        swatch_top = top + (row_height - swatch) // 2
        if colour is not None:
            panel[swatch_top : swatch_top + swatch, left : left + swatch] = colour
            corner = (left + swatch - 1, swatch_top + swatch - 1)
            cv2.rectangle(panel, (left, swatch_top), corner, _TEXT, 1)
        text = _fit(text, column_width - text_x - pad, scale, thickness)
        baseline = top + (row_height + int(22 * scale)) // 2
        colour_of_text = _TEXT if colour is not None else _MUTED_TEXT
        _draw_text(panel, text, left + text_x, baseline, scale, colour_of_text, thickness)
    return panel


def segmentation_panel(
    image: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]],
    *,
    alpha: float = 0.5,
    max_entries: int = 8,
) -> np.ndarray:
    """`segmentation_overlay` with the legend of present classes in columns below it."""
    overlay = segmentation_overlay(image, labels, palette, alpha=alpha)
    width = overlay.shape[1]
    row_height = max(16, round(40 * _font_scale(width)))
    legend = segmentation_legend(
        labels, names, palette, max_entries=max_entries, row_height=row_height, width=width
    )
    return np.concatenate([overlay, legend], axis=0)


# ------------------------------------------------------------------------------------------------- pose


def sides_from_names(joint_names: Sequence[str]) -> list[str]:
    """'left' / 'right' / 'center' per joint from names such as 'left_knee', 'r_wrist', 'RightHand'."""
    sides = []
    for name in joint_names:
        lowered = name.lower()
        if lowered.startswith(("left", "l_")):
            sides.append("left")
        elif lowered.startswith(("right", "r_")):
            sides.append("right")
        else:
            sides.append("center")
    return sides


def _check_skeleton(parents: Sequence[int], sides: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    parent_array = np.asarray(parents, dtype=np.int64)
    joints = len(parent_array)
    if parent_array.ndim != 1 or joints == 0:
        raise ValueError("parents must be a non-empty sequence with one parent index (-1 = root) per joint")
    bad = [j for j, p in enumerate(parent_array) if p == j or not -1 <= p < joints]
    if bad:
        raise ValueError(f"parents[{bad[0]}] = {parent_array[bad[0]]} is not -1 or another joint index")
    side_list = ["center"] * joints if sides is None else list(sides)
    if len(side_list) != joints or any(s not in SIDES for s in side_list):
        raise ValueError(f"sides must give one of {SIDES} for each of the {joints} joints")
    return parent_array, side_list


def _shade(colour: np.ndarray, side: str) -> tuple[int, int, int]:
    """Left limbs lighter, right limbs darker than the person's colour, the centre line as is."""
    rgb = colour.astype(np.float32)
    if side == "left":
        rgb = rgb + (255.0 - rgb) * 0.55
    elif side == "right":
        rgb = rgb * 0.5
    return tuple(int(v) for v in rgb.round())


def draw_skeletons(
    image: np.ndarray,
    keypoints: Sequence[np.ndarray],
    parents: Sequence[int],
    *,
    sides: Sequence[str] | None = None,
    valid: Sequence[np.ndarray] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
) -> np.ndarray:
    """Each person's skeleton in its own colour: bones to parents, left side light, right side dark.

    `keypoints` holds one J×2 array of (x, y) image pixels per person; a joint is drawn when it is finite
    and `valid` (one bool array of J per person) allows it. `boxes` (x0, y0, x1, y1 per person) adds a
    labelled box. Every line has a dark outline so it stays visible on light and dark backgrounds.
    """
    canvas = _check_rgb(image).copy()
    parent_array, side_list = _check_skeleton(parents, sides)
    joints = len(parent_array)
    if valid is not None and len(valid) != len(keypoints):
        raise ValueError(f"valid has {len(valid)} entries for {len(keypoints)} persons")
    if boxes is not None and len(boxes) != len(keypoints):
        raise ValueError(f"boxes has {len(boxes)} entries for {len(keypoints)} persons")
    height, width = canvas.shape[:2]
    thickness = max(2, round(min(height, width) / 160))
    radius = thickness + 1
    limit = 4 * max(height, width)  # keeps wild coordinates inside OpenCV's integer range
    outline = (16, 16, 16)

    for person, points in enumerate(keypoints):
        points = np.asarray(points, dtype=np.float64)
        if points.shape != (joints, 2):
            raise ValueError(
                f"keypoints[{person}] must be {joints}×2 (x, y) pixels, got shape {points.shape}"
            )
        ok = np.isfinite(points).all(axis=1)
        if valid is not None:
            mask = np.asarray(valid[person], dtype=bool)
            if mask.shape != (joints,):
                raise ValueError(f"valid[{person}] must have {joints} booleans, got shape {mask.shape}")
            ok &= mask
        pixels = np.clip(np.nan_to_num(points), -limit, limit).round().astype(np.int64)
        colour = PERSON_COLORS[person % len(PERSON_COLORS)]
        bones = [(j, int(p)) for j, p in enumerate(parent_array) if p >= 0 and ok[j] and ok[p]]
        for passes in ("outline", "colour"):
            for child, parent in bones:
                a, b = tuple(map(int, pixels[child])), tuple(map(int, pixels[parent]))
                if passes == "outline":
                    cv2.line(canvas, a, b, outline, thickness + 2, cv2.LINE_AA)
                else:
                    cv2.line(canvas, a, b, _shade(colour, side_list[child]), thickness, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            centre = tuple(map(int, pixels[j]))
            cv2.circle(canvas, centre, radius + 1, outline, -1, cv2.LINE_AA)
            cv2.circle(canvas, centre, radius, _shade(colour, side_list[j]), -1, cv2.LINE_AA)
        if boxes is not None:
            _draw_person_box(canvas, boxes[person], person, colour, thickness, limit)
    return canvas


def _draw_person_box(
    canvas: np.ndarray, box: Sequence[float], person: int, colour: np.ndarray, thickness: int, limit: int
) -> None:
    corners = np.asarray(box, dtype=np.float64)
    if corners.shape != (4,) or not np.isfinite(corners).all():
        raise ValueError(f"boxes[{person}] must be 4 finite numbers (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = np.clip(corners, -limit, limit).round().astype(int)
    rgb = tuple(int(v) for v in colour)
    cv2.rectangle(canvas, (x0, y0), (x1, y1), rgb, max(1, thickness - 1), cv2.LINE_AA)
    scale = _font_scale(canvas.shape[1]) * 0.85
    text = f"person {person + 1}"
    text_w = _text_width(text, scale, 1)
    tag_h = _line_height(scale)
    top = y0 - tag_h if y0 - tag_h >= 0 else y0
    cv2.rectangle(canvas, (x0, top), (x0 + text_w + 6, top + tag_h), rgb, -1)
    _draw_text(canvas, text, x0 + 3, top + int(0.72 * tag_h), scale, (0, 0, 0), 1)


# ------------------------------------------------------------------------------- captions and banners


def draw_caption(image: np.ndarray, text: str) -> np.ndarray:
    """`image` with `text` word-wrapped on a dark banner appended below it (the image is not covered)."""
    image = _check_rgb(image)
    if not isinstance(text, str):
        raise TypeError(f"caption must be a str, got {type(text).__name__}")
    width = image.shape[1]
    scale = _font_scale(width)
    pad = max(4, _line_height(scale) // 3)
    lines = _wrap(text if text.strip() else "(empty caption)", width - 2 * pad, scale, _thickness(scale))
    return np.concatenate([image, _text_block(lines, width, scale)], axis=0)


def banner(image: np.ndarray, text: str = RANDOM_WEIGHTS_WARNING) -> np.ndarray:
    """`image` (same size) with a red warning strip across the top and a red frame around it.

    Made for the random-weights warning: it is stamped into the pixels so no copy of a picture loses it.
    """
    canvas = _check_rgb(image).copy()
    height, width = canvas.shape[:2]
    scale = _font_scale(width) * 1.25
    thickness = 2
    pad = max(4, _line_height(scale) // 4)
    lines = _wrap(text, max(1, width - 2 * pad), scale, thickness)
    step = _line_height(scale)
    strip = min(height, 2 * pad + step * len(lines))
    canvas[:strip] = _WARNING_RED
    for row, line in enumerate(lines):
        x = max(pad, (width - _text_width(line, scale, thickness)) // 2)
        _draw_text(canvas, line, x, pad + row * step + int(0.72 * step), scale, (255, 255, 255), thickness)
    border = max(2, min(height, width) // 100)
    cv2.rectangle(canvas, (0, 0), (width - 1, height - 1), _WARNING_RED, 2 * border)
    return canvas


# ------------------------------------------------------------------------------------- contact sheets


def contact_sheet(
    tiles: Mapping[str, np.ndarray],
    *,
    columns: int = 3,
    tile_size: int | tuple[int, int] = 320,
) -> np.ndarray:
    """All `tiles` in a grid, each scaled to fit a tile_size box (width, height) under its title."""
    if not tiles:
        raise ValueError("contact_sheet needs at least one tile")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    box_w, box_h = (tile_size, tile_size) if isinstance(tile_size, int) else tile_size
    if box_w < 16 or box_h < 16:
        raise ValueError(f"tile_size must be at least 16 px, got {tile_size}")
    scale = float(np.clip(box_w / 560.0, 0.42, 1.0))
    thickness = _thickness(scale)
    title_h = _line_height(scale) + 4
    gap = 8
    cell_w, cell_h = box_w, title_h + box_h
    rows = -(-len(tiles) // columns)
    cols = min(columns, len(tiles))
    sheet = np.empty((gap + rows * (cell_h + gap), gap + cols * (cell_w + gap), 3), np.uint8)
    sheet[:] = _BACKGROUND
    for index, (title, tile) in enumerate(tiles.items()):
        tile = _check_rgb(tile, f"tile {title!r}")
        top = gap + (index // columns) * (cell_h + gap)
        left = gap + (index % columns) * (cell_w + gap)
        text = _fit(ascii_text(title), cell_w, scale, thickness)
        _draw_text(sheet, text, left, top + int(0.75 * title_h), scale, _TEXT, thickness)
        factor = min(box_w / tile.shape[1], box_h / tile.shape[0])
        size = (max(1, round(tile.shape[1] * factor)), max(1, round(tile.shape[0] * factor)))
        resized = cv2.resize(tile, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        y = top + title_h + (box_h - size[1]) // 2
        x = left + (box_w - size[0]) // 2
        sheet[y : y + size[1], x : x + size[0]] = resized
    return sheet
