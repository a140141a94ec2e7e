"""ptl-example: a third-party ptl plugin with a pruner (``gmp``) and an SSL algorithm
(``sat-fixmatch``), written only against ptl's public plugin contract (docs/plugins/)."""

__version__ = "0.1.0"
