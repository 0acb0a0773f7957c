"""The segmentation class table, published once (transient local) on ``segmentation/labels``.

``vision_msgs/LabelInfo`` would be the standard message, but vision_msgs has no PyPI wheel, so the table
goes out as a ``std_msgs/String`` holding JSON::

    {"ids": [0, 1, ..., 133], "names": ["unlabeled", "person", ...],
     "colors": [[0, 0, 0], [220, 20, 60], ...], "unlabeled_id": 0}

``ids[i]`` is the value of a pixel of class ``names[i]`` in the ``mono8`` label image and ``colors[i]``
its RGB colour in the colour image (the table of fourm_ros.tokenizers.semseg).
"""

from __future__ import annotations

import json

from std_msgs.msg import String

from fourm_ros.tokenizers.semseg import UNLABELED, semseg_classes


def labels_json() -> str:
    classes = semseg_classes()
    return json.dumps(
        {
            "ids": [entry.id for entry in classes],
            "names": [entry.name for entry in classes],
            "colors": [list(entry.color) for entry in classes],
            "unlabeled_id": UNLABELED,
        }
    )


def labels_message() -> String:
    """The ``segmentation/labels`` message (see the module doc for the JSON layout)."""
    return String(data=labels_json())
