"""The source models (``G_s`` and ``C_s``), built from the recipe only when a phase needs them.

A resumed run whose pools are already on disk and whose KD stage is done never loads them.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from ptl_cli import plugins
from ptl_cli.engine.sync import host_sync
from ptl_cli.errors import UserError


class Sources:
    def __init__(self, recipe: Any, device: Any) -> None:
        self.recipe = recipe
        self.device = device

    @cached_property
    def generator(self) -> Any:
        g = self.recipe.source.generator
        spec = plugins.get("generators", g.name)
        with host_sync("loading the source generator onto its device, once"):
            generator = spec.build(self.device, params=g.params, where=f"[source.generator] {g.name}")
        self._check_classes(generator, "generator")
        return generator

    @cached_property
    def classifier(self) -> Any:
        c = self.recipe.source.classifier
        spec = plugins.get("classifiers", c.name)
        with host_sync("loading the source classifier onto its device, once"):
            classifier = spec.build(self.device, params=c.params, where=f"[source.classifier] {c.name}")
        classifier.eval()
        self._check_classes(classifier, "classifier")
        return classifier

    def _check_classes(self, component: Any, what: str) -> None:
        """G_s and C_s must share the source label space, or PCS conditions on the wrong classes.

        Components whose classes are the names they speak or score (``classes_are_names``: the
        text-to-image generator, CLIP) must also name them alike, in the same order.
        """
        other = self.__dict__.get("classifier" if what == "generator" else "generator")
        if other is None:
            return
        gen, cls = (component, other) if what == "generator" else (other, component)
        s = self.recipe.source
        named = getattr(gen, "classes_are_names", False) and getattr(cls, "classes_are_names", False)
        if named and gen.num_classes == cls.num_classes and tuple(gen.class_names) != tuple(cls.class_names):
            pairs = zip(gen.class_names, cls.class_names, strict=True)
            i = next(i for i, (a, b) in enumerate(pairs) if a != b)
            raise UserError(
                f"[source]: generator {s.generator.name!r} and classifier {s.classifier.name!r} name class "
                f"{i} differently ({gen.class_names[i]!r} vs {cls.class_names[i]!r}); give both the same "
                "classes"
            )
        if gen.num_classes != cls.num_classes:
            raise class_count_mismatch(s.generator.name, gen.num_classes, s.classifier.name, cls.num_classes)


def class_count_mismatch(generator: str, g_classes: int, classifier: str, c_classes: int) -> UserError:
    """The error for G_s and C_s of different class counts (the plan's check, from the plugins'
    facts, and the built models' check say it in the same words)."""
    return UserError(
        f"[source]: generator {generator!r} has {g_classes} classes but classifier {classifier!r} has "
        f"{c_classes}; G_s and C_s must share the source classes"
    )
