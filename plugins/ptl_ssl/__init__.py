"""ptl's built-in semi-supervised learning algorithms, packaged exactly like a third-party plugin.

``ptl_ssl.hooks`` registers FixMatch, FlexMatch, FreeMatch, UDA, MeanTeacher, PseudoLabel and a
supervised baseline without importing torch; each algorithm lives in its own module
(``fixmatch.py``, ...). The views they ask for, and the batched strong augmentation, are built by
the core (:mod:`ptl_cli.data.views`, :mod:`ptl_cli.data.randaugment`), which every plugin can import.
"""
