"""Exercise specs, one module per lab (labNN.py); importing this package registers all of them.

A new lab adds `labNN.py` calling `course_utils.grading.register(Exercise(...))`; nothing here changes.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module.startswith("lab"):
        importlib.import_module(f"{__name__}.{_module}")
