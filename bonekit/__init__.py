"""bonekit: bone segmentation for X-rays when labels are scarce.

The shared core used by the three stages (``selfsup``, ``cosup``, ``finetune``).
"""

__version__ = "0.1.0"
