"""ptl's built-in semi-supervised learning algorithms, packaged exactly like a third-party plugin.

``ptl_ssl.hooks`` registers FixMatch, FlexMatch, FreeMatch, UDA, MeanTeacher, PseudoLabel and a
supervised baseline without importing torch; each algorithm lives in its own module
(``fixmatch.py``, ...), and the batched strong augmentation they rely on is in ``randaugment.py``.
"""
