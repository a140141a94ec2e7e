"""Re-export of :mod:`ptl_cli.data.randaugment`, where the strong augmentation now lives.

It moved to the core's data package next to the weak augmentation, so the views can be built
without importing this plugin; this name keeps older imports working.
"""

from ptl_cli.data.randaugment import CUTOUT_RGB, OPS, apply_round, cutout, cutout_at, rand_augment, strong

__all__ = ["CUTOUT_RGB", "OPS", "apply_round", "cutout", "cutout_at", "rand_augment", "strong"]
