"""breastcad: computer-aided diagnosis of breast cancer, evaluated honestly.

Research use only. Not a medical device.
"""

__version__ = "0.1.0"

POSITIVE_CLASS = "malignant"
"""The positive class of every binary task in breastcad: metrics such as sensitivity refer to it."""
