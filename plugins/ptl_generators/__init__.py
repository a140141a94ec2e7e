"""ptl's source-model plugin: BigGAN and diffusers generators, source classifiers, ``train-source``.

Registered by ``hooks.py`` (entry point ``generators``); see docs/source-models.md.
"""
