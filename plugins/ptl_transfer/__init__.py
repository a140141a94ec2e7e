"""``ptl transfer``: transfer without source data (pseudo pre-training, PCS and P-SSL).

Packaged exactly like a third-party plugin: ``ptl_transfer.hooks`` registers the ``transfer``
workflow and command without importing torch. The shared pseudo-sample pool lives in
``pool.py``, pseudo conditional sampling in ``pcs.py`` and the stage loops in ``workflow.py``.
"""
