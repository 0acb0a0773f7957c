"""The segmentation class table message: unlabeled + the 133 COCO-panoptic classes, as documented JSON."""

import json

from std_msgs.msg import String

from fourm_ros.ros.labels import labels_message


def test_labels_message_json():
    msg = labels_message()
    assert isinstance(msg, String)
    table = json.loads(msg.data)
    assert set(table) == {"ids", "names", "colors", "unlabeled_id"}
    assert table["ids"] == list(range(134))
    assert table["unlabeled_id"] == 0 and table["names"][0] == "unlabeled" and table["colors"][0] == [0, 0, 0]
    # label value = COCO-panoptic contiguous index + 1
    assert table["names"][1] == "person" and table["colors"][1] == [220, 20, 60]
    assert table["names"][3] == "car" and table["names"][10] == "traffic light"
    assert len(set(table["names"])) == 134
    assert all(len(color) == 3 and all(0 <= c <= 255 for c in color) for color in table["colors"])


def test_table_matches_the_package_data_in_order():
    names = json.loads(labels_message().data)["names"]
    # 0-based COCO-panoptic ids from the 4M paper's "walkable" set (4m21.md), shifted by one
    assert (names[88], names[101], names[133]) == ("floor-wood", "road", "rug-merged")
