"""The profiles in force, and which of them a resource is checked against.

A resource is checked against every Rofecare profile that governs it, whether it claims
the profile or not (the hospital's rules hold whatever door data comes through, issue 7),
and against each profile it declares in ``meta.profile``
(https://hl7.org/fhir/R4/resource-definitions.html#Meta.profile). A Rofecare profile
governs the resources of its type that its ``applies-to`` extension (a FHIRPath
expression) selects, or all of them when it has none: several profiles may share a type
(a consultation and an admission are both Encounters).

A declared profile this server does not know, or cannot enforce, is reported as a warning
and not refused: the client's claim is unchecked, and saying so is what FHIR servers do
(https://hl7.org/fhir/R4/validation.html#profile-validation).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

from fhir_server.definitions.terminology import Terminology
from fhir_server.errors import Issue
from fhir_server.validation.fhirpath_shapes import FhirPathFunction
from fhir_server.validation.profile_checker import ProfileChecker
from fhir_server.validation.profile_compiler import (
    BASE_PROFILE,
    CompiledProfile,
    ProfileError,
    compile_profile,
)

log = logging.getLogger("rofecare.profiles")

UNKNOWN_PROFILE = "rofecare-1805"
WRONG_TYPE_PROFILE = "rofecare-1806"
UNENFORCEABLE_PROFILE = "rofecare-1807"
ROFECARE_CANONICAL = "http://rofecare.com/fhir/StructureDefinition/"


@functools.lru_cache(maxsize=4096)
def compile_fhirpath(expression: str) -> FhirPathFunction:
    """One compiled function per expression, shared by every profile that uses it."""
    from fhirpathpy import compile as fhirpath_compile
    from fhirpathpy.models import models

    check_syntax(expression)
    function: FhirPathFunction = fhirpath_compile(expression, models["r4"])
    return function


def check_syntax(expression: str) -> None:
    """Raise ValueError on a FHIRPath syntax error. fhirpathpy's parser recovers from them
    silently (``((`` compiles), so a mistyped invariant would pass or fail at random: its
    generated ANTLR parser is run once more here with a listener that raises, and must
    consume the whole expression."""
    from antlr4 import CommonTokenStream, InputStream, Token
    from antlr4.error.ErrorListener import ErrorListener
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
    from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

    class Raising(ErrorListener):  # type: ignore[misc]
        def syntaxError(  # noqa: N802 (ANTLR's name)
            self, recognizer: Any, symbol: Any, line: int, column: int, message: str, error: Any
        ) -> None:
            raise ValueError(f"column {column + 1}: {message}")

    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(Raising())
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(Raising())
    parser.expression()
    if parser.getCurrentToken().type != Token.EOF:
        raise ValueError(f"unexpected {parser.getCurrentToken().text!r} after the expression")


class ProfileRegistry:
    def __init__(
        self, packaged: Iterable[dict[str, Any]], terminology: Terminology | None = None
    ) -> None:
        """Compile the packaged profiles; one that cannot be enforced stops the start-up
        (ProfileError), since the hospital would believe a rule holds that does not."""
        self._checker = ProfileChecker(terminology)
        self._packaged: dict[str, CompiledProfile] = {}
        self.definitions: list[dict[str, Any]] = []  # every packaged one, to publish
        for definition in packaged:
            self.definitions.append(definition)
            if definition.get("kind") != "resource":
                # Extension definitions (complex-type): their rules are stated where they
                # are used, in the resource profiles' extension slices.
                continue
            profile = compile_profile(definition, compile_fhirpath)
            if profile.url in self._packaged:
                raise ProfileError(f"Two packaged profiles share the url {profile.url}")
            self._packaged[profile.url] = profile
        self._governing: dict[str, tuple[CompiledProfile, ...]] = {}
        for profile in self._packaged.values():
            self._governing[profile.type] = (*self._governing.get(profile.type, ()), profile)
        self._stored: dict[str, CompiledProfile] = {}
        self._unenforceable: dict[str, str] = {}  # stored profile url -> why not

    @property
    def packaged(self) -> list[CompiledProfile]:
        return list(self._packaged.values())

    def get(self, url: str) -> CompiledProfile | None:
        canonical = url.split("|", 1)[0]
        return self._packaged.get(canonical) or self._stored.get(canonical)

    def use_stored(self, definitions: Iterable[dict[str, Any]]) -> None:
        """Put in force the profiles stored on this server (a partner's, a project's), for
        the resources that declare them; the packaged ones keep their url. One this engine
        cannot enforce is remembered with the reason, which a resource claiming it is told
        (a warning: its claim is unchecked, not refused)."""
        stored: dict[str, CompiledProfile] = {}
        unenforceable: dict[str, str] = {}
        for definition in definitions:
            url = definition.get("url")
            if not isinstance(url, str) or url in self._packaged:
                continue
            if definition.get("kind") != "resource" or definition.get("status") == "retired":
                continue
            try:
                stored[url] = compile_profile(definition, compile_fhirpath)
            except ProfileError as error:
                unenforceable[url] = str(error)
        self._stored, self._unenforceable = stored, unenforceable

    def governing(self, resource: dict[str, Any]) -> list[CompiledProfile]:
        """The Rofecare profiles that govern ``resource`` whether it claims them or not."""
        chosen = []
        for profile in self._governing.get(str(resource.get("resourceType")), ()):
            if profile.applies_to is None or _truthy(profile.applies_to(resource, None)):
                chosen.append(profile)
        return chosen

    def issues(self, resource: dict[str, Any], asked: Iterable[str] = ()) -> list[Issue]:
        """Every fault of ``resource`` against the profiles that govern it, those it
        declares, and those ``asked`` ($validate's ``profile``)."""
        profiles, issues = self.select(resource, asked)
        return issues + self.check(resource, profiles)

    def check(self, resource: dict[str, Any], profiles: Iterable[CompiledProfile]) -> list[Issue]:
        issues: list[Issue] = []
        for profile in profiles:
            issues.extend(self._checker.check(profile, resource))
        return issues

    def select(
        self,
        resource: dict[str, Any],
        asked: Iterable[str] = (),
        *,
        governing: bool = True,
        declared: bool = True,
    ) -> tuple[list[CompiledProfile], list[Issue]]:
        """The profiles to check ``resource`` against (those that govern it, those it
        declares in meta.profile, those ``asked``), and the issues of claims that cannot be
        checked (an unknown profile: a warning; one of another type: an error)."""
        resource_type = str(resource.get("resourceType"))
        profiles = (
            {profile.url: profile for profile in self.governing(resource)} if governing else {}
        )
        issues: list[Issue] = []
        meta = resource.get("meta")
        claimed = meta.get("profile") if declared and isinstance(meta, dict) else None
        claims = [
            (url, f"{resource_type}.meta.profile[{index}]")
            for index, url in enumerate(claimed if isinstance(claimed, list) else [])
        ]
        claims += [(url, resource_type) for url in asked]
        for url, where in claims:
            if not isinstance(url, str) or url.split("|", 1)[0] in profiles:
                continue
            if url.split("|", 1)[0] == BASE_PROFILE + resource_type:
                continue  # the base definition: the structural check covers it
            profile = self.get(url)
            reason = self._unenforceable.get(url.split("|", 1)[0])
            if profile is None and reason is not None:
                issues.append(
                    Issue(
                        "warning",
                        "not-supported",
                        f"Profile {url} cannot be enforced by this server ({reason}); it "
                        "was not checked",
                        UNENFORCEABLE_PROFILE,
                        (where,),
                    )
                )
            elif profile is None:
                issues.append(
                    Issue(
                        "warning",
                        "not-supported",
                        f"Profile {url} is not known to this server; it was not checked",
                        UNKNOWN_PROFILE,
                        (where,),
                    )
                )
            elif profile.type != resource_type:
                issues.append(
                    Issue(
                        "error",
                        "invalid",
                        f"Profile {url} constrains {profile.type}, not {resource_type}",
                        WRONG_TYPE_PROFILE,
                        (where,),
                    )
                )
            else:
                profiles[profile.url] = profile
        return list(profiles.values()), issues


def _truthy(result: list[Any]) -> bool:
    return bool(result) and all(item is not False for item in result)
