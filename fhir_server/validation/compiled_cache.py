"""The compiled R4 schema validator, kept on disk between runs.

Why: fastjsonschema turns the whole R4 schema into 5 MB of Python source, which Python then
compiles: about 2 s of CPU at the start of every process (each ``rofecare serve`` worker,
every ``rofecare load``, every test run that starts a server). The compiled code object,
marshalled, loads in about 15 ms. It is kept like a ``.pyc`` file: in the user's cache
directory, named by a hash of everything it depends on (the prepared schema, the
fastjsonschema version, the Python bytecode version), so a change of any of them compiles
afresh and never reuses a stale validator.

Secure by default: marshalled code is executed when loaded, so the cache is used only in a
directory that belongs to the current user and that nobody else may write to; anything
unusable (missing, unreadable, corrupt, foreign) is compiled again, never trusted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import marshal
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

log = logging.getLogger("rofecare.validation")

CACHE_DIR_VARIABLE = "ROFECARE_CACHE_DIR"
FUNCTION_NAME = "validate"  # what fastjsonschema names the root schema's function


def compiled_validator(definition: dict[str, Any]) -> Callable[[Any], Any]:
    """fastjsonschema's validator of ``definition``, from the cache when it holds it."""
    directory = cache_directory()
    if directory is None:
        return _function(_compile(definition))
    path = directory / f"r4-validator-{_key(definition)}.marshal"
    code = _load(path)
    if code is None:
        code = _compile(definition)
        _store(path, code)
    return _function(code)


def cache_directory() -> Path | None:
    """Where compiled validators are kept; None when no safe place is available."""
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    if configured:
        directory = Path(configured)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        directory = Path(base) / "rofecare"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = directory.stat()
    except OSError:
        return None
    if status.st_uid != os.getuid() or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning("not caching the compiled schema in %s: others may write there", directory)
        return None
    return directory


def _key(definition: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(fastjsonschema.VERSION.encode())
    digest.update(importlib.util.MAGIC_NUMBER)
    digest.update(sys.version.encode())
    digest.update(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()[:32]


def _compile(definition: dict[str, Any]) -> Any:
    source = fastjsonschema.compile_to_code(definition, detailed_exceptions=False)
    return compile(source, "<rofecare-r4-validator>", "exec")


def _function(code: Any) -> Callable[[Any], Any]:
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - our own compiled schema, see the module docstring
    function: Callable[[Any], Any] = namespace[FUNCTION_NAME]
    return function


def _load(path: Path) -> Any | None:
    try:
        status = path.stat()
        if status.st_uid != os.getuid() or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None
        code = marshal.loads(path.read_bytes())  # noqa: S302 - ours, checked above
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not hasattr(code, "co_code"):
        return None
    return code


def _store(path: Path, code: Any) -> None:
    """Written whole or not at all (two processes may compile at once)."""
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".validator-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(marshal.dumps(code))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        log.info("the compiled schema could not be cached in %s: %s", path.parent, error)
