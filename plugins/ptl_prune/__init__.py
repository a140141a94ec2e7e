"""Built-in pruning plugin: edge-popup, IteRand and the dense SGD baseline, for any model.

Registered through the ``prune = "ptl_prune.hooks"`` entry point like a third-party plugin.
The supermask mechanism (``supermask.py``) wraps ordinary ``nn.Conv*``/``nn.Linear`` layers, so
every model plugin's networks, torchvision's included, can be pruned without code changes.
"""
