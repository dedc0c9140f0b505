"""The embedded default data: a procedural 3D hand phantom with exact bone labels.

``python -m bonekit.phantom --out DIR --people N --size S --seed X [--volumes] [--bent-share F]`` writes the
competition layout; :func:`ensure` makes the default dataset on first use.
"""

from bonekit.phantom.generate import ensure, generate, stats
from bonekit.phantom.spec import Spec

__all__ = ["Spec", "ensure", "generate", "stats"]
