"""The CEL engine (the ``common-expression-language`` package), without its CLI.

The package's ``__init__`` imports its command-line tool and a pure-Python
standard library before the Rust extension: about 12 MB resident in every
daemon that only needs ``compile``. This module loads the extension
``cel.cel`` alone and registers it under that name, so that a later
``import cel`` (whose ``__init__`` does ``from .cel import *``) reuses it
rather than initialising the extension a second time.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

_NAME = "cel.cel"


def _load() -> ModuleType:
    loaded = sys.modules.get(_NAME)
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("cel")  # locates the package without running it
    folders = package.submodule_search_locations if package is not None else None
    for folder in folders or ():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"cel{suffix}"
            if not path.is_file():
                continue
            loader = importlib.machinery.ExtensionFileLoader(_NAME, str(path))
            spec = importlib.util.spec_from_file_location(_NAME, path, loader=loader)
            if spec is None:
                continue
            module = importlib.util.module_from_spec(spec)
            sys.modules[_NAME] = module
            try:
                loader.exec_module(module)
            except BaseException:
                del sys.modules[_NAME]
                raise
            return module
    raise ImportError("the common-expression-language package (module cel) is not installed")


#: ``cel.compile``: a CEL expression to a program; ValueError/RuntimeError when invalid.
compile: Callable[[str], Any] = _load().compile
