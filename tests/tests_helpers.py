"""Reference code the tests compare against (written from the public descriptions in formats.md)."""

import json

import cv2
import numpy as np

from bonekit.classes import CLASS2IND


def baseline_label(json_path, h, w):
    """The competition baseline's rasteriser: each class filled into a fresh single-channel array."""
    anns = json.loads(open(json_path).read())["annotations"]
    label = np.zeros((h, w, 29), dtype=np.uint8)
    for ann in anns:
        class_label = np.zeros((h, w), dtype=np.uint8)
        cv2.fillPoly(class_label, [np.array(ann["points"])], 1)
        label[..., CLASS2IND[ann["label"]]] = class_label
    return label.transpose(2, 0, 1).astype(bool)
