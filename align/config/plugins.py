"""Objects named in a config by where they live: "path/to/file.py:Name" or "package.module:Name".

Environments (`env.name`) and algorithms (`algo`) accept such specs, so users plug in their own
class without editing the package. `error` is the caller's error class, so each message names the
config key it came from.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path


def import_object(spec: str, key: str, error: type[Exception]):
    """The object a "location:Name" spec names; a one-line `error` naming `key` otherwise."""
    location, _, attr = spec.rpartition(":")
    if not location or not attr:
        raise error(f"{key}={spec!r}: expected 'path/to/file.py:Name' or 'package.module:Name'")
    if location.endswith(".py") or "/" in location:
        module = _import_file(location, spec, key, error)
    else:
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as err:
            raise error(f"{key}={spec!r}: module {location!r} is not importable; use 'path/to/file.py:Name'") from err
    found = getattr(module, attr, None)
    if found is None:
        raise error(f"{key}={spec!r}: {module.__name__} has no attribute {attr!r}")
    return found


def _import_file(location: str, spec: str, key: str, error: type[Exception]):
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise error(f"{key}={spec!r}: file {str(path)!r} does not exist")
    # A module name derived from the full path keeps two files with the same stem apart.
    name = f"_align_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise error(f"{key}={spec!r}: cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before exec, so dataclasses inside the file find their module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
