"""String parameters (search.html#string): starts-with, case and accent folding, :exact, :contains.

The default match is "equals or starts with" after both sides are folded for case and combining
characters (accents); ``:exact`` compares the whole string with case and accents; ``:contains``
matches anywhere. HumanName and Address parameters cover their string parts, not ``use``.
"""

from __future__ import annotations

from tests.contract.search_cases import SPEC, SearchCase, patient

STRING = f"{SPEC}#string"
MODIFIERS = f"{SPEC}#modifiers"
MULTI = f"{SPEC}#combining"
ESCAPING = f"{SPEC}#escaping"

NAMES = (
    patient("eve", name=[{"family": "Adams", "given": ["Eve"]}]),
    patient("evelyn", name=[{"family": "Brown", "given": ["Evelyn"]}]),
    patient("severine", name=[{"family": "Clark", "given": ["Séverine"]}]),
    patient("eve-lower", name=[{"family": "Dupont", "given": ["eve"]}]),
    patient("eloise", name=[{"family": "Müller", "given": ["Éloïse"]}]),
    patient("muller", name=[{"family": "Muller", "given": ["Hans"]}]),
    patient("text-only", name=[{"text": "Zoltán Kodály"}]),
)

GIVEN_AND = (
    patient("anne-marie", name=[{"family": "Martin", "given": ["Anne", "Marie"]}]),
    patient(
        "two-names",
        name=[
            {"use": "official", "family": "Martin", "given": ["Anne"]},
            {"use": "maiden", "family": "Leroy", "given": ["Marie"]},
        ],
    ),
    patient("anne-zoe", name=[{"family": "Petit", "given": ["Anne", "Zoé"]}]),
    patient("anne-only", name=[{"family": "Martinez", "given": ["Anne"]}]),
    patient("marie-only", name=[{"family": "Moreau", "given": ["Marie"]}]),
)

ADDRESSES = (
    patient(
        "addr-spring",
        address=[
            {
                "line": ["12 Main Street"],
                "city": "Springfield",
                "state": "IL",
                "postalCode": "62701",
                "country": "USA",
            }
        ],
    ),
    patient(
        "addr-paris",
        address=[
            {
                "use": "home",
                "line": ["5 Rue de Rivoli"],
                "city": "Paris",
                "postalCode": "75001",
                "country": "France",
            }
        ],
    ),
    patient(
        "addr-springs",
        address=[{"city": "Colorado Springs", "state": "CO", "postalCode": "80903"}],
    ),
    patient("addr-line", address=[{"use": "work", "line": ["Springwood Farm", "Home Lane"]}]),
    patient("addr-montreal", address=[{"city": "Montréal", "state": "QC", "country": "Canada"}]),
)

ORGANIZATIONS = (
    {"resourceType": "Organization", "id": "org-acme", "name": "ACME Corp"},
    {
        "resourceType": "Organization",
        "id": "org-alias",
        "name": "Global Health Ltd",
        "alias": ["Acme Health"],
    },
    {"resourceType": "Organization", "id": "org-smith-comma", "name": "Smith, Jones & Co"},
    {"resourceType": "Organization", "id": "org-smithson", "name": "Smithson Labs"},
    {"resourceType": "Organization", "id": "org-jones", "name": "Jones Pharmacy"},
)

CASES: tuple[SearchCase, ...] = (
    SearchCase(
        name="string-given-starts-with",
        fixtures=NAMES,
        resource_type="Patient",
        query="given=eve",
        expected=("eve", "evelyn", "eve-lower"),
        note=f"default string match is equals-or-starts-with, case-insensitive; 'Séverine' only "
        f"contains 'eve' ({STRING})",
    ),
    SearchCase(
        name="string-given-case-folded-query",
        fixtures=NAMES,
        resource_type="Patient",
        query="given=EVE",
        expected=("eve", "evelyn", "eve-lower"),
        note=f"case folding applies to the search value as well as the element ({STRING})",
    ),
    SearchCase(
        name="string-given-contains",
        fixtures=NAMES,
        resource_type="Patient",
        query="given:contains=eve",
        expected=("eve", "evelyn", "severine", "eve-lower"),
        note=f":contains matches anywhere in the string, accent-insensitively ('Séverine') "
        f"({MODIFIERS}, {STRING})",
    ),
    SearchCase(
        name="string-given-exact-case-sensitive",
        fixtures=NAMES,
        resource_type="Patient",
        query="given:exact=Eve",
        expected=("eve",),
        note=f":exact matches the whole string with its case: not 'eve', not 'Evelyn' ({STRING})",
    ),
    SearchCase(
        name="string-given-exact-lowercase",
        fixtures=NAMES,
        resource_type="Patient",
        query="given:exact=eve",
        expected=("eve-lower",),
        note=f":exact is case-sensitive the other way too ({STRING})",
    ),
    SearchCase(
        name="string-accent-insensitive-element",
        fixtures=NAMES,
        resource_type="Patient",
        query="given=eloise",
        expected=("eloise",),
        note=f"'Éloïse' is found by 'eloise': combining characters are ignored ({STRING})",
    ),
    SearchCase(
        name="string-accent-insensitive-query",
        fixtures=NAMES,
        resource_type="Patient",
        query="given=%C3%89LO%C3%8FSE",
        expected=("eloise",),
        note=f"a percent-encoded accented, upper-case search value 'ÉLOÏSE' is folded the same way "
        f"({STRING})",
    ),
    SearchCase(
        name="string-family-accent-both-ways",
        fixtures=NAMES,
        resource_type="Patient",
        query="family=m%C3%BCller",
        expected=("eloise", "muller"),
        note=f"'müller' matches 'Müller' and 'Muller': both sides lose their accents ({STRING})",
    ),
    SearchCase(
        name="string-family-exact-keeps-accents",
        fixtures=NAMES,
        resource_type="Patient",
        query="family:exact=M%C3%BCller",
        expected=("eloise",),
        note=f":exact compares accents: 'Müller' is not 'Muller' ({STRING})",
    ),
    SearchCase(
        name="string-family-contains-folded",
        fixtures=NAMES,
        resource_type="Patient",
        query="family:contains=ULLE",
        expected=("eloise", "muller"),
        note=f":contains is case- and accent-insensitive like the default match ({MODIFIERS})",
    ),
    SearchCase(
        name="string-name-covers-text",
        fixtures=NAMES,
        resource_type="Patient",
        query="name=zolt",
        expected=("text-only",),
        note=f"Patient 'name' covers the string parts of HumanName, including text ({STRING})",
    ),
    SearchCase(
        name="string-name-covers-family",
        fixtures=NAMES,
        resource_type="Patient",
        query="name=adam",
        expected=("eve",),
        note=f"Patient 'name' matches a family name by its start ({STRING})",
    ),
    SearchCase(
        name="string-name-covers-given-accented",
        fixtures=NAMES,
        resource_type="Patient",
        query="name=severin",
        expected=("severine",),
        note=f"Patient 'name' matches given names, accent-insensitively ({STRING})",
    ),
    SearchCase(
        name="string-or-comma",
        fixtures=NAMES,
        resource_type="Patient",
        query="given=evelyn,hans",
        expected=("evelyn", "muller"),
        note=f"comma-separated values are OR ({MULTI})",
    ),
    SearchCase(
        name="string-and-repeated",
        fixtures=GIVEN_AND,
        resource_type="Patient",
        query="given=anne&given=marie",
        expected=("anne-marie", "two-names"),
        note=f"a repeated parameter is AND on the resource, not on one element: 'two-names' has "
        f"Anne and Marie in different HumanNames ({MULTI})",
    ),
    SearchCase(
        name="string-and-of-or",
        fixtures=GIVEN_AND,
        resource_type="Patient",
        query="given=anne&given=marie,zo%C3%A9",
        expected=("anne-marie", "two-names", "anne-zoe"),
        note=f"AND of (anne) and (marie OR zoé) ({MULTI})",
    ),
    SearchCase(
        name="string-family-exact-whole-string",
        fixtures=GIVEN_AND,
        resource_type="Patient",
        query="family:exact=Martin",
        expected=("anne-marie", "two-names"),
        note=f":exact does not match a longer string that starts with the value ('Martinez') "
        f"({STRING})",
    ),
    SearchCase(
        name="string-address-city-starts-with",
        fixtures=ADDRESSES,
        resource_type="Patient",
        query="address-city=spring",
        expected=("addr-spring",),
        note=f"'Colorado Springs' contains but does not start with 'spring' ({STRING})",
    ),
    SearchCase(
        name="string-address-any-part",
        fixtures=ADDRESSES,
        resource_type="Patient",
        query="address=spring",
        expected=("addr-spring", "addr-line"),
        note=f"'address' covers the string parts of Address: city and line ({STRING})",
    ),
    SearchCase(
        name="string-address-not-use",
        fixtures=ADDRESSES,
        resource_type="Patient",
        query="address=home",
        expected=("addr-line",),
        note=f"Address search covers string elements, not 'use' (addr-paris has use=home; "
        f"addr-line has a line 'Home Lane') ({STRING})",
    ),
    SearchCase(
        name="string-address-postalcode-prefix",
        fixtures=ADDRESSES,
        resource_type="Patient",
        query="address-postalcode=627",
        expected=("addr-spring",),
        note=f"postal codes are strings: starts-with ({STRING})",
    ),
    SearchCase(
        name="string-address-country-or",
        fixtures=ADDRESSES,
        resource_type="Patient",
        query="address-country=france,canada",
        expected=("addr-paris", "addr-montreal"),
        note=f"OR across values, case-insensitive ({MULTI}, {STRING})",
    ),
    SearchCase(
        name="string-address-city-accent",
        fixtures=ADDRESSES,
        resource_type="Patient",
        query="address-city=montreal",
        expected=("addr-montreal",),
        note=f"'Montréal' found by 'montreal' ({STRING})",
    ),
    SearchCase(
        name="string-address-city-contains",
        fixtures=ADDRESSES,
        resource_type="Patient",
        query="address-city:contains=spring",
        expected=("addr-spring", "addr-springs"),
        note=f":contains finds 'Springs' in the middle of 'Colorado Springs' ({MODIFIERS})",
    ),
    SearchCase(
        name="string-address-city-exact",
        fixtures=ADDRESSES,
        resource_type="Patient",
        query="address-city:exact=Springfield",
        expected=("addr-spring",),
        note=f":exact on an Address part ({STRING})",
    ),
    SearchCase(
        name="string-name-and-alias",
        fixtures=ORGANIZATIONS,
        resource_type="Organization",
        query="name=acme",
        expected=("org-acme", "org-alias"),
        note=f"Organization 'name' covers name and alias ({STRING}; expression of "
        f"Organization-name)",
    ),
    SearchCase(
        name="string-escaped-comma",
        fixtures=ORGANIZATIONS,
        resource_type="Organization",
        query="name=Smith\\,%20Jones",
        expected=("org-smith-comma",),
        note=f"'\\,' is a literal comma, not OR: the value is 'Smith, Jones' ({ESCAPING})",
    ),
    SearchCase(
        name="string-unescaped-comma-is-or",
        fixtures=ORGANIZATIONS,
        resource_type="Organization",
        query="name=Smith,Jones",
        expected=("org-smith-comma", "org-smithson", "org-jones"),
        note=f"an unescaped comma separates OR values 'Smith' and 'Jones' ({ESCAPING})",
    ),
)
