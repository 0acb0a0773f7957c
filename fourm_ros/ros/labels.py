"""The segmentation class table, published once (transient local) on ``segmentation/labels``.

``vision_msgs/LabelInfo`` would be the standard message, but vision_msgs has no PyPI wheel, so the table
goes out as a ``std_msgs/String`` holding JSON::

    {"ids": [0, 1, ..., 133], "names": ["unlabeled", "person", ...],
     "colors": [[0, 0, 0], [220, 20, 60], ...], "unlabeled_id": 0}

``ids[i]`` is the value of a pixel of class ``names[i]`` in the ``mono8`` label image and ``colors[i]``
its RGB colour in the colour image. 4M-21 predicts the 133 COCO-panoptic classes shifted by one, with 0
for "no class", so ids 1..133 are the classes of ``data/coco_panoptic_133.json`` in their order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from std_msgs.msg import String

UNLABELED_ID = 0
UNLABELED_NAME = "unlabeled"
UNLABELED_COLOR = (0, 0, 0)


@dataclass(frozen=True)
class ClassTable:
    ids: tuple[int, ...]
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    unlabeled_id: int = UNLABELED_ID

    def to_json(self) -> str:
        return json.dumps(
            {
                "ids": list(self.ids),
                "names": list(self.names),
                "colors": [list(color) for color in self.colors],
                "unlabeled_id": self.unlabeled_id,
            }
        )


@cache
def segmentation_classes() -> ClassTable:
    """The 134-entry table: 0 = unlabeled, then the COCO-panoptic classes of the package data in order."""
    text = resources.files("fourm_ros").joinpath("data/coco_panoptic_133.json").read_text(encoding="utf-8")
    classes = json.loads(text)["classes"]
    for position, entry in enumerate(classes):
        if entry["index"] != position:
            raise ValueError(
                f"coco_panoptic_133.json: class {entry['name']!r} has index {entry['index']}, "
                f"expected {position} (the file must list classes in contiguous order)"
            )
    names = (UNLABELED_NAME, *(entry["name"] for entry in classes))
    colors = (UNLABELED_COLOR, *(tuple(int(c) for c in entry["color"]) for entry in classes))
    return ClassTable(ids=tuple(range(len(names))), names=names, colors=colors)


def labels_message(table: ClassTable | None = None) -> String:
    """The ``segmentation/labels`` message (see the module doc for the JSON layout)."""
    return String(data=(table or segmentation_classes()).to_json())
