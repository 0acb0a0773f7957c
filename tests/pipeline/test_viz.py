"""Pictures people look at: exact value mappings, drawings that stay where they belong, refused bad input."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fourm_ros import viz
from fourm_ros.sample import sample_frames

GRAY = 90
PURE = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255]], np.uint8
)


def _gray_image(height=200, width=300):
    return np.full((height, width, 3), GRAY, np.uint8)


def _has_colour(image, colour):
    return bool((image == np.asarray(colour, np.uint8)).all(axis=2).any())


# ----------------------------------------------------------------------------------------------- depth


def test_depth_ramp_walks_the_colormap_in_order():
    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)[None, :]
    for name in ("turbo", "inferno"):
        rgb = viz.colorize_depth(ramp, lo=0.0, hi=1.0, colormap=name)
        assert rgb.dtype == np.uint8 and rgb.shape == (1, 256, 3)
        np.testing.assert_array_equal(rgb[0], viz.colormap_lut(name))


def test_depth_colours_follow_value_order_and_clamp_outside_the_range():
    rng = np.random.default_rng(0)
    depth = rng.uniform(-1.0, 3.0, size=(40, 50)).astype(np.float32)
    rgb = viz.colorize_depth(depth, lo=0.0, hi=2.0)
    lut = viz.colormap_lut("turbo").astype(int)
    # Recover each pixel's position along the colour map: it must rise with the depth value.
    index = np.abs(rgb.reshape(-1, 1, 3).astype(int) - lut[None]).sum(axis=2).argmin(axis=1)
    order = np.argsort(depth.ravel(), kind="stable")
    assert (np.diff(index[order]) >= 0).all()
    assert (index[depth.ravel() <= 0] == 0).all() and (index[depth.ravel() >= 2] == 255).all()


def test_depth_default_range_ignores_outliers_and_marks_non_finite_pixels():
    depth = np.tile(np.linspace(1.0, 2.0, 100, dtype=np.float32), (100, 1))
    depth[0, 0] = 1e6
    depth[1, 1] = np.nan
    depth[2, 2] = -np.inf
    lo, hi = viz.robust_range(depth)
    assert 1.0 <= lo < 1.05 and 1.95 < hi <= 2.0
    rgb = viz.colorize_depth(depth, invalid_color=(255, 0, 255))
    lut = viz.colormap_lut("turbo")
    np.testing.assert_array_equal(rgb[0, 0], lut[255])  # the outlier clamps to the far end
    np.testing.assert_array_equal(rgb[1, 1], [255, 0, 255])
    np.testing.assert_array_equal(rgb[2, 2], [255, 0, 255])
    np.testing.assert_array_equal(
        rgb[50, 50], lut[int(np.clip(round((depth[50, 50] - lo) / (hi - lo) * 255), 0, 255))]
    )


def test_depth_without_any_finite_value_is_drawn_as_invalid():
    rgb = viz.colorize_depth(np.full((4, 5), np.nan, np.float32))
    assert rgb.shape == (4, 5, 3) and not rgb.any()


def test_depth_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        viz.colorize_depth(np.zeros((4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="real numbers"):
        viz.colorize_depth(np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="unknown colormap"):
        viz.colorize_depth(np.zeros((4, 4), np.float32), colormap="rainbow-ish")
    with pytest.raises(ValueError, match="lo <= hi"):
        viz.colorize_depth(np.zeros((4, 4), np.float32), lo=2.0, hi=1.0)
    with pytest.raises(ValueError, match="percentiles"):
        viz.robust_range(np.zeros((4, 4), np.float32), percentiles=(90, 10))


def test_colorbar_is_appended_below_with_the_colormap_left_to_right():
    rgb = viz.colorize_depth(np.random.default_rng(1).random((64, 96)).astype(np.float32))
    out = viz.with_colorbar(rgb, 0.1, 0.9, "relative depth (near → far)")
    assert out.shape[1] == 96 and out.shape[0] > 64
    np.testing.assert_array_equal(out[:64], rgb)
    lut = viz.colormap_lut("turbo")
    bar_rows = [r for r in range(64, out.shape[0]) if _has_colour(out[r : r + 1], lut[0])]
    assert bar_rows, "the low end of the colour map is missing from the bar"
    row = out[bar_rows[0]]
    first_low = np.flatnonzero((row == lut[0]).all(axis=1))[0]
    first_high = np.flatnonzero((row == lut[255]).all(axis=1))[0]
    assert first_low < first_high


# --------------------------------------------------------------------------------------------- normals


def test_normals_map_axes_to_channels():
    normals = np.array([[[0, 0, 1], [-1, -1, -1], [1, 1, 1], [1, 0, -1]]], np.float32)
    rgb = viz.normals_to_rgb(normals)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    np.testing.assert_array_equal(rgb[0, 0], [128, 128, 255])
    np.testing.assert_array_equal(rgb[0, 1], [0, 0, 0])
    np.testing.assert_array_equal(rgb[0, 2], [255, 255, 255])
    np.testing.assert_array_equal(rgb[0, 3], [255, 128, 0])


def test_normals_clip_out_of_range_and_blank_non_finite():
    normals = np.array([[[2.0, -3.0, 0.0], [np.nan, 0.0, 1.0]]], np.float32)
    rgb = viz.normals_to_rgb(normals)
    np.testing.assert_array_equal(rgb[0, 0], [255, 0, 128])
    np.testing.assert_array_equal(rgb[0, 1], [0, 0, 0])


def test_normals_reject_bad_input():
    with pytest.raises(ValueError, match="H×W×3"):
        viz.normals_to_rgb(np.zeros((4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="floating-point"):
        viz.normals_to_rgb(np.zeros((4, 4, 3), np.uint8))


# ---------------------------------------------------------------------------------------- segmentation


def test_overlay_alpha_zero_is_the_image_and_alpha_one_the_palette():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    labels = rng.integers(0, len(PURE), size=(20, 30)).astype(np.uint8)
    np.testing.assert_array_equal(viz.segmentation_overlay(image, labels, PURE, alpha=0.0), image)
    solid = viz.segmentation_overlay(image, labels, PURE, alpha=1.0, boundaries=False)
    np.testing.assert_array_equal(solid, PURE[labels])


def test_overlay_nearest_resizes_labels_to_the_image():
    labels = np.array([[0, 1], [2, 3]], np.int64)
    out = viz.segmentation_overlay(_gray_image(4, 6), labels, PURE, alpha=1.0, boundaries=False)
    expected = np.repeat(np.repeat(PURE[labels], 2, axis=0), 3, axis=1)
    np.testing.assert_array_equal(out, expected)


def test_overlay_darkens_class_boundaries_only():
    labels = np.zeros((10, 10), np.uint8)
    labels[:, 5:] = 1
    out = viz.segmentation_overlay(_gray_image(10, 10), labels, PURE, alpha=1.0)
    np.testing.assert_array_equal(out[:, 5], np.tile(np.rint(PURE[1] / 3), (10, 1)))
    np.testing.assert_array_equal(out[:, :5], np.tile(PURE[0], (10, 5, 1)))
    np.testing.assert_array_equal(out[:, 6:], np.tile(PURE[1], (10, 4, 1)))


def test_overlay_rejects_bad_input():
    image = _gray_image(8, 8)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\]"):
        viz.segmentation_overlay(image, np.full((8, 8), 6, np.uint8), PURE)
    with pytest.raises(ValueError, match="integer"):
        viz.segmentation_overlay(image, np.zeros((8, 8), np.float32), PURE)
    with pytest.raises(ValueError, match="alpha"):
        viz.segmentation_overlay(image, np.zeros((8, 8), np.uint8), PURE, alpha=1.5)
    with pytest.raises(ValueError, match="palette"):
        viz.segmentation_overlay(image, np.zeros((8, 8), np.uint8), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        viz.segmentation_overlay(image[..., 0], np.zeros((8, 8), np.uint8), PURE)


def _labels_with_shares():
    labels = np.zeros((10, 10), np.uint8)  # class 0: 40 px
    labels[:3] = 2  # class 2: 30 px
    labels[3:, :3] = 3  # class 3: 21 px
    labels[3:, 9] = 5  # class 5: 7 px
    labels[9, 3:5] = 1  # class 1: 2 px
    return labels  # class 4 is absent


def test_present_classes_are_exactly_the_labels_in_the_map_largest_first():
    shares = viz.present_classes(_labels_with_shares())
    assert [c for c, _ in shares] == [0, 2, 3, 5, 1]
    assert [round(s, 2) for _, s in shares] == [0.4, 0.3, 0.21, 0.07, 0.02]
    with pytest.raises(ValueError, match="65535"):
        viz.present_classes(np.array([[0, 70000]]))


def test_legend_shows_swatches_of_present_classes_only():
    names = ["red", "green", "blue", "yellow", "magenta", "cyan"]
    legend = viz.segmentation_legend(_labels_with_shares(), names, PURE)
    assert legend.dtype == np.uint8 and legend.ndim == 3
    for present in (0, 1, 2, 3, 5):
        assert _has_colour(legend, PURE[present]), names[present]
    assert not _has_colour(legend, PURE[4])


def test_legend_summarises_classes_beyond_max_entries():
    names = ["red", "green", "blue", "yellow", "magenta", "cyan"]
    legend = viz.segmentation_legend(_labels_with_shares(), names, PURE, max_entries=3)
    shown = [c for c in range(len(PURE)) if _has_colour(legend, PURE[c])]
    assert shown == [0, 2]  # the two largest; the third row says "+3 more"
    full = viz.segmentation_legend(_labels_with_shares(), names, PURE)
    assert legend.shape[0] < full.shape[0]


def test_legend_flows_into_columns_under_a_wide_image():
    names = ["red", "green", "blue", "yellow", "magenta", "cyan"]
    tall = viz.segmentation_legend(_labels_with_shares(), names, PURE)
    wide = viz.segmentation_legend(_labels_with_shares(), names, PURE, width=3 * tall.shape[1])
    assert wide.shape[1] == 3 * tall.shape[1] and wide.shape[0] < tall.shape[0]
    for present in (0, 1, 2, 3, 5):
        assert _has_colour(wide, PURE[present])


def test_legend_needs_a_name_per_class():
    with pytest.raises(ValueError, match="names has 2 entries"):
        viz.segmentation_legend(_labels_with_shares(), ["a", "b"], PURE)


def test_segmentation_panel_puts_the_legend_under_the_overlay():
    image = _gray_image(120, 160)
    labels = _labels_with_shares()
    names = ["red", "green", "blue", "yellow", "magenta", "cyan"]
    panel = viz.segmentation_panel(image, labels, names, PURE, alpha=0.6)
    assert panel.shape[1] == 160 and panel.shape[0] > 120
    np.testing.assert_array_equal(panel[:120], viz.segmentation_overlay(image, labels, PURE, alpha=0.6))


# ------------------------------------------------------------------------------------------------ pose

CHAIN_PARENTS = [-1, 0, 0, 1, 2]  # pelvis, left hip, right hip, left knee, right knee
CHAIN_SIDES = ["center", "left", "right", "left", "right"]


def _chain(x0=100.0, y0=60.0):
    return np.array(
        [[x0, y0], [x0 - 20, y0 + 10], [x0 + 20, y0 + 10], [x0 - 25, y0 + 60], [x0 + 25, y0 + 60]]
    )


def test_skeleton_changes_pixels_only_near_the_keypoints():
    image = _gray_image()
    points = _chain()
    out = viz.draw_skeletons(image, [points], CHAIN_PARENTS, sides=CHAIN_SIDES)
    assert out.shape == image.shape and out.dtype == np.uint8
    changed = (out != image).any(axis=2)
    ys, xs = np.nonzero(changed)
    margin = 8  # line half-width + joint radius + anti-aliasing at this image size
    assert xs.min() >= points[:, 0].min() - margin and xs.max() <= points[:, 0].max() + margin
    assert ys.min() >= points[:, 1].min() - margin and ys.max() <= points[:, 1].max() + margin
    for x, y in points.astype(int):
        assert changed[y, x]
    np.testing.assert_array_equal(image, _gray_image())  # the input is not drawn on


def test_skeleton_left_and_right_limbs_and_persons_differ_in_colour():
    first, second = _chain(80), _chain(220)
    out = viz.draw_skeletons(_gray_image(), [first, second], CHAIN_PARENTS, sides=CHAIN_SIDES)

    def bone_colour(points, child):
        x, y = ((points[child] + points[CHAIN_PARENTS[child]]) / 2).round().astype(int)
        return tuple(out[y, x])

    left, right, other_left = bone_colour(first, 3), bone_colour(first, 4), bone_colour(second, 3)
    assert len({left, right, other_left, (GRAY,) * 3}) == 4


def test_skeleton_skips_invalid_and_non_finite_joints():
    points = _chain()
    points[4] = [250.0, 180.0]  # far from the rest, but flagged invalid
    valid = np.array([True, True, True, True, False])
    out = viz.draw_skeletons(_gray_image(), [points], CHAIN_PARENTS, sides=CHAIN_SIDES, valid=[valid])
    assert not (out[170:190, 240:260] != GRAY).any()
    points[4] = [np.nan, np.nan]
    out = viz.draw_skeletons(_gray_image(), [points], CHAIN_PARENTS, sides=CHAIN_SIDES)
    assert (out != GRAY).any()


def test_skeleton_draws_labelled_boxes():
    out = viz.draw_skeletons(_gray_image(), [_chain()], CHAIN_PARENTS, boxes=[[60, 40, 140, 140]])
    colour = viz.PERSON_COLORS[0].astype(int)
    edge = out[90, 140].astype(int)  # right edge of the box, far from every joint
    assert np.abs(edge - colour).sum() < np.abs(edge - GRAY).sum()
    assert _has_colour(out[15:40, 60:120], colour)  # the "person 1" tag above the box


def test_sides_from_names():
    names = ["pelvis", "left_hip", "R_knee", "RightHand", "l_wrist", "head"]
    assert viz.sides_from_names(names) == ["center", "left", "right", "right", "left", "center"]


def test_skeleton_rejects_bad_input():
    image = _gray_image()
    with pytest.raises(ValueError, match=r"keypoints\[0\] must be 5×2"):
        viz.draw_skeletons(image, [np.zeros((4, 2))], CHAIN_PARENTS)
    with pytest.raises(ValueError, match=r"parents\[1\]"):
        viz.draw_skeletons(image, [np.zeros((5, 2))], [-1, 1, 0, 1, 2])
    with pytest.raises(ValueError, match="sides"):
        viz.draw_skeletons(image, [np.zeros((5, 2))], CHAIN_PARENTS, sides=["left"] * 4 + ["up"])
    with pytest.raises(ValueError, match="valid has 2 entries"):
        viz.draw_skeletons(image, [np.zeros((5, 2))], CHAIN_PARENTS, valid=[np.ones(5, bool)] * 2)
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        viz.draw_skeletons(image, [np.zeros((5, 2))], CHAIN_PARENTS, boxes=[[0, 0, 1]])


# ------------------------------------------------------------------------------- captions and banners


def test_ascii_text_replaces_what_opencv_4_cannot_draw():
    assert viz.ascii_text("near → far — café “ok”") == 'near -> far - cafe "ok"'
    assert viz.ascii_text("日本") == "??"


def test_caption_is_wrapped_below_the_untouched_image():
    image = _gray_image(100, 224)
    short = viz.draw_caption(image, "a cat")
    long = viz.draw_caption(image, "a woman in an orange space suit in front of a flag and a shuttle " * 3)
    assert short.shape[1] == long.shape[1] == 224
    assert 100 < short.shape[0] < long.shape[0]
    np.testing.assert_array_equal(long[:100], image)
    assert viz.draw_caption(image, "").shape[0] == short.shape[0]  # empty captions still say so
    assert viz.draw_caption(image, "a → b, naïve").shape == short.shape
    with pytest.raises(TypeError, match="str"):
        viz.draw_caption(image, None)


def test_banner_stamps_a_red_warning_on_a_same_size_image():
    image = _gray_image(224, 224)
    out = viz.banner(image)
    assert out.shape == image.shape
    red = (out == np.array([205, 20, 20], np.uint8)).all(axis=2)
    assert red[:10].mean() > 0.5  # the strip across the top
    assert red[:, 0].all() and red[-1].all()  # the frame
    np.testing.assert_array_equal(out[150:200, 50:170], image[150:200, 50:170])
    assert "RANDOM WEIGHTS" in viz.RANDOM_WEIGHTS_WARNING


# ------------------------------------------------------------------------------------- contact sheets


def test_contact_sheet_places_each_tile_in_its_cell():
    tiles = {f"tile {i}": np.full((50 + 10 * i, 80, 3), PURE[i], np.uint8) for i in range(5)}
    sheet = viz.contact_sheet(tiles, columns=3, tile_size=100)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3
    assert sheet.shape[1] > 3 * 100 and sheet.shape[0] > 2 * 100
    for i in range(5):
        ys, xs = np.nonzero((sheet == PURE[i]).all(axis=2))
        assert ys.size > 80 * 50, f"tile {i} is missing or shrunk"
        assert (xs.mean() * 3 // sheet.shape[1], ys.mean() * 2 // sheet.shape[0]) == (i % 3, i // 3)


def test_contact_sheet_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one tile"):
        viz.contact_sheet({})
    with pytest.raises(ValueError, match="tile 'depth'"):
        viz.contact_sheet({"depth": np.zeros((10, 10), np.float32)})


# ------------------------------------------------------------------------------------- the whole sheet

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
SMPL_NAMES = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
]  # fmt: skip


def build_demo_sheet() -> np.ndarray:
    """Every visualisation on the astronaut frame with synthetic 224×224 outputs, as the CLI would show."""
    frame = next(f for f in sample_frames() if f.name == "astronaut")
    image = frame.rgb
    yy, xx = np.mgrid[0:224, 0:224].astype(np.float32) / 223.0
    radius2 = ((xx - 0.42) / 0.32) ** 2 + ((yy - 0.65) / 0.5) ** 2
    person = radius2 < 1
    depth = 0.6 + 0.4 * (1 - yy)
    depth[person] = 0.45 - 0.2 * np.sqrt(1 - radius2[person])
    grad_y, grad_x = np.gradient(depth)
    normals = np.dstack([-300 * grad_x, 300 * grad_y, np.ones_like(depth)])
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    table = json.loads((Path(viz.__file__).parent / "data" / "coco_panoptic_133.json").read_text())["classes"]
    names = ["unlabeled"] + [c["name"] for c in table]  # 4M-21 semseg: 0 = unlabeled, k = class k - 1
    palette = np.array([[0, 0, 0]] + [c["color"] for c in table], np.uint8)
    labels = np.full((224, 224), names.index("wall-other-merged"), np.uint8)
    labels[person] = names.index("person")
    labels[(xx > 0.7) & (yy < 0.3)] = names.index("airplane")
    labels[(xx < 0.15) & (yy < 0.5)] = names.index("banner")
    joints = np.array(
        [[200, 336], [240, 336], [160, 336], [200, 270], [250, 420], [150, 420], [200, 228], [250, 480],
         [150, 480], [200, 192], [260, 498], [140, 498], [200, 138], [230, 144], [170, 144], [200, 60],
         [290, 168], [110, 168], [330, 240], [60, 240], [320, 288], [40, 282], [320, 300], [35, 297]],
        np.float32,
    )  # fmt: skip
    lo, hi = viz.robust_range(depth)
    tiles = {
        f"input ({frame.name}, {image.shape[1]}x{image.shape[0]})": image,
        "relative depth": viz.with_colorbar(viz.colorize_depth(depth, lo=lo, hi=hi), lo, hi),
        "surface normals": viz.normals_to_rgb(normals),
        "semantic segmentation": viz.segmentation_panel(image, labels, names, palette),
        "human pose": viz.draw_skeletons(
            image, [joints], SMPL_PARENTS, sides=viz.sides_from_names(SMPL_NAMES), boxes=[[30, 40, 350, 512]]
        ),
        "caption": viz.draw_caption(image, "a woman in an orange space suit in front of a flag — smiling"),
        "random weights": viz.banner(image),
    }
    return viz.contact_sheet(tiles, columns=4, tile_size=320)


def test_demo_sheet_of_all_visualisations_round_trips_through_png(tmp_path):
    sheet = build_demo_sheet()
    path = tmp_path / "sheet.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    reread = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(reread, sheet)
    assert sheet.shape[1] > 4 * 320 and sheet.shape[0] > 2 * 320 and sheet.std() > 30


def test_optical_normals_are_coloured_like_a_normal_map():
    from fourm_ros.viz import optical_normals_to_rgb

    facing_camera = np.zeros((1, 1, 3), np.float32)
    facing_camera[..., 2] = -1.0  # optical frame: z forward, so a surface facing the camera points to -z
    np.testing.assert_array_equal(optical_normals_to_rgb(facing_camera)[0, 0], [128, 128, 255])
