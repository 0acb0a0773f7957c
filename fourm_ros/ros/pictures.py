"""Pictures of what perception_node published, for people checking a replay: one contact sheet per frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image
from visualization_msgs.msg import Marker

from fourm_ros import viz
from fourm_ros.ros.conversion import compressed_to_rgb, image_to_rgb

SHOWN = ("depth/relative", "normals/color", "segmentation/color", "caption/marker")


def _float_image(msg: Image) -> np.ndarray:
    rows = np.frombuffer(bytes(msg.data), np.float32 if msg.encoding.startswith("32F") else np.uint8)
    return rows.reshape(msg.height, -1)[:, : msg.width]


class OutputPictures:
    """Collects input frames and the node's picture-worthy outputs by header stamp, then draws them."""

    def __init__(self, limit: int = 8, random_weights: bool = False):
        self.limit = limit
        self.random_weights = random_weights
        self.inputs: dict[tuple, np.ndarray] = {}
        self.outputs: dict[tuple, dict[str, object]] = {}

    @staticmethod
    def _key(msg: object) -> tuple:
        return msg.header.stamp.sec, msg.header.stamp.nanosec

    def add_input(self, msg: Image | CompressedImage) -> None:
        if len(self.inputs) < self.limit:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
            self.inputs[self._key(msg)] = rgb

    def add_output(self, topic: str, data: bytes, kind: type) -> None:
        if topic in SHOWN:
            msg = deserialize_message(data, kind)
            if self._key(msg) in self.inputs:
                self.outputs.setdefault(self._key(msg), {})[topic] = msg

    def sheet(self, key: tuple) -> np.ndarray:
        outputs = self.outputs.get(key, {})
        caption: Marker | None = outputs.get("caption/marker")
        frame = self.inputs[key]
        tiles = {"input": viz.draw_caption(frame, caption.text) if caption is not None else frame}
        if "depth/relative" in outputs:
            depth = _float_image(outputs["depth/relative"])
            lo, hi = viz.robust_range(depth)
            tiles["depth/relative"] = viz.with_colorbar(viz.colorize_depth(depth, lo=lo, hi=hi), lo, hi)
        for topic in ("normals/color", "segmentation/color"):
            if topic in outputs:
                tiles[topic] = image_to_rgb(outputs[topic])
        if self.random_weights:
            tiles = {name: viz.banner(tile) for name, tile in tiles.items()}
        return viz.contact_sheet(tiles, columns=len(tiles))

    def write(self, directory: str | Path) -> list[Path]:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, key in enumerate(sorted(self.inputs)):
            path = directory / f"frame_{index:03d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(self.sheet(key), cv2.COLOR_RGB2BGR))
            paths.append(path)
        return paths
