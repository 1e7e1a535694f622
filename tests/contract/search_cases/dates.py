"""Date parameters (search.html#date) under the range semantics of search.html#prefix.

Every value is a half-open interval: a date of year, month or day precision covers that whole
period, a dateTime with seconds covers that second, an instant is a point, a Period runs from
its start to the end of its end (an absent boundary is unbounded). With S = [s0, s1) the search
value and T = [t0, t1) the resource value:

    eq  S contains T            ne  not eq
    gt  t1 > s1 (T reaches beyond S)     lt  t0 < s0 (T starts before S)
    ge  gt or eq                le  lt or eq
    sa  t0 >= s1                eb  t1 <= s0        ap  S and T overlap (plus a tolerance)

Offsets are converted to UTC, and search values without an offset are UTC: this server's time
zone is UTC (search.html#date: "the servers local time zone should be assumed"). Cases whose
answer depends on that choice say "UTC" in their note.
"""

from __future__ import annotations

from tests.contract.search_cases import SPEC, Resource, SearchCase, observation, patient

DATE = f"{SPEC}#date"
PREFIX = f"{SPEC}#prefix"
MULTI = f"{SPEC}#combining"


def _encounter(id_: str, start: str | None = None, end: str | None = None) -> Resource:
    encounter: Resource = {
        "resourceType": "Encounter",
        "id": id_,
        "status": "finished" if end else "in-progress",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
        },
    }
    period = {key: value for key, value in (("start", start), ("end", end)) if value}
    if period:
        encounter["period"] = period
    return encounter


BIRTHDATES = (
    patient("pa-1980", birthDate="1980"),
    patient("pa-1980-05", birthDate="1980-05"),
    patient("pa-1980-05-15", birthDate="1980-05-15"),
    patient("pa-1981-01-01", birthDate="1981-01-01"),
    patient("pa-1979-12-31", birthDate="1979-12-31"),
    patient("pa-none", gender="unknown"),
)

APPROX_BIRTHDATES = (
    patient("ap-exact", birthDate="1980-05-15"),
    patient("ap-month", birthDate="1980-05"),
    patient("ap-far", birthDate="1780-05-15"),
)

# In UTC: ob-minus5 2020-01-02T04:30:00, ob-utc-noon 2020-01-01T12:00:00, ob-plus2
# 2020-01-01T22:30:00, ob-day the whole of 2020-01-02, ob-instant 2019-12-31T21:00:00.000.
OFFSETS = (
    observation("ob-minus5", effectiveDateTime="2020-01-01T23:30:00-05:00"),
    observation("ob-utc-noon", effectiveDateTime="2020-01-01T12:00:00Z"),
    observation("ob-plus2", effectiveDateTime="2020-01-02T00:30:00+02:00"),
    observation("ob-day", effectiveDateTime="2020-01-02"),
    observation("ob-instant", effectiveInstant="2020-01-01T02:00:00.000+05:00"),
)

# en-closed [2020-01-10, 2020-01-21), en-open-end [2020-01-15T08:00Z, inf),
# en-open-start (-inf, 2020-01-06), en-feb [2020-02-01T10:00:00Z, 2020-02-01T11:00:01Z).
PERIODS = (
    _encounter("en-closed", "2020-01-10", "2020-01-20"),
    _encounter("en-open-end", start="2020-01-15T08:00:00Z"),
    _encounter("en-open-start", end="2020-01-05"),
    _encounter("en-feb", "2020-02-01T10:00:00Z", "2020-02-01T11:00:00Z"),
    _encounter("en-none"),
)

APPROX_PERIODS = (
    _encounter("ap-en-overlap", "2020-01-10", "2020-01-20"),
    _encounter("ap-en-open", start="2020-01-15T08:00:00Z"),
    _encounter("ap-en-far", "1820-01-01", "1820-02-01"),
)

TIMINGS = (
    observation(
        "ob-timing-bounds",
        effectiveTiming={
            "repeat": {
                "boundsPeriod": {"start": "2020-03-01", "end": "2020-03-31"},
                "frequency": 1,
                "period": 1,
                "periodUnit": "d",
            }
        },
    ),
    observation("ob-period-march", effectivePeriod={"start": "2020-03-02", "end": "2020-03-09"}),
    observation("ob-april", effectiveDateTime="2020-04-02"),
    observation("ob-period-open", effectivePeriod={"start": "2020-03-19"}),
)


def _birthdate(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(
        name=name,
        fixtures=BIRTHDATES,
        resource_type="Patient",
        query=query,
        expected=expected,
        note=note,
    )


def _offset(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(
        name=name,
        fixtures=OFFSETS,
        resource_type="Observation",
        query=query,
        expected=expected,
        note=note,
    )


def _period(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(
        name=name,
        fixtures=PERIODS,
        resource_type="Encounter",
        query=query,
        expected=expected,
        note=note,
    )


PRECISION_CASES = (
    _birthdate(
        "date-eq-year-contains-finer",
        "birthdate=1980",
        ("pa-1980", "pa-1980-05", "pa-1980-05-15"),
        f"eq: the year 1980 contains the month 1980-05 and the day 1980-05-15 ({PREFIX})",
    ),
    _birthdate(
        "date-eq-explicit-prefix",
        "birthdate=eq1980",
        ("pa-1980", "pa-1980-05", "pa-1980-05-15"),
        f"no prefix means eq; eq written out is the same ({PREFIX})",
    ),
    _birthdate(
        "date-eq-month-excludes-coarser",
        "birthdate=1980-05",
        ("pa-1980-05", "pa-1980-05-15"),
        f"eq: the month 1980-05 does not contain the year 1980, so '1980' is no match "
        f"({PREFIX}, eq = search range fully contains target range)",
    ),
    _birthdate(
        "date-eq-day",
        "birthdate=1980-05-15",
        ("pa-1980-05-15",),
        f"eq at day precision: coarser values (1980, 1980-05) are not contained ({DATE})",
    ),
    _birthdate(
        "date-ne-month",
        "birthdate=ne1980-05",
        ("pa-1980", "pa-1981-01-01", "pa-1979-12-31"),
        f"ne: target not fully contained; 1980 overlaps May but is not inside it. A resource "
        f"without a birthDate has no value to compare and does not match ({PREFIX})",
    ),
    _birthdate(
        "date-lt-day",
        "birthdate=lt1980-05-15",
        ("pa-1980", "pa-1980-05", "pa-1979-12-31"),
        f"lt: the target starts before the search day; the year and month do ({PREFIX})",
    ),
    _birthdate(
        "date-gt-day",
        "birthdate=gt1980-05-15",
        ("pa-1980", "pa-1980-05", "pa-1981-01-01"),
        f"gt: the target reaches beyond the end of the search day ({PREFIX})",
    ),
    _birthdate(
        "date-ge-day",
        "birthdate=ge1980-05-15",
        ("pa-1980", "pa-1980-05", "pa-1980-05-15", "pa-1981-01-01"),
        f"ge = gt or eq ({PREFIX})",
    ),
    _birthdate(
        "date-le-day",
        "birthdate=le1980-05-15",
        ("pa-1980", "pa-1980-05", "pa-1980-05-15", "pa-1979-12-31"),
        f"le = lt or eq ({PREFIX})",
    ),
    _birthdate(
        "date-sa-day",
        "birthdate=sa1980-05-15",
        ("pa-1981-01-01",),
        f"sa: the target starts after the search day ends; 1980 and 1980-05 start before "
        f"({PREFIX})",
    ),
    _birthdate(
        "date-eb-day",
        "birthdate=eb1980-05-15",
        ("pa-1979-12-31",),
        f"eb: the target ends before the search day starts ({PREFIX})",
    ),
    _birthdate(
        "date-gt-year",
        "birthdate=gt1980",
        ("pa-1981-01-01",),
        f"gt a year: only values reaching past 1980-12-31 ({PREFIX})",
    ),
    _birthdate(
        "date-lt-year",
        "birthdate=lt1980",
        ("pa-1979-12-31",),
        f"lt a year: only values starting before 1980-01-01 ({PREFIX})",
    ),
    _birthdate(
        "date-ge-year",
        "birthdate=ge1980",
        ("pa-1980", "pa-1980-05", "pa-1980-05-15", "pa-1981-01-01"),
        f"ge a year includes everything inside the year ({PREFIX})",
    ),
    _birthdate(
        "date-le-year",
        "birthdate=le1980",
        ("pa-1980", "pa-1980-05", "pa-1980-05-15", "pa-1979-12-31"),
        f"le a year includes everything inside the year ({PREFIX})",
    ),
    _birthdate(
        "date-sa-month-boundary",
        "birthdate=sa1980-04",
        ("pa-1980-05", "pa-1980-05-15", "pa-1981-01-01"),
        f"sa: 1980-05 starts exactly where April ends, which counts as starting after it "
        f"({PREFIX})",
    ),
    _birthdate(
        "date-eb-month-boundary",
        "birthdate=eb1980-06",
        ("pa-1980-05", "pa-1980-05-15", "pa-1979-12-31"),
        f"eb: 1980-05 ends exactly where June starts, which counts as ending before it ({PREFIX})",
    ),
    _birthdate(
        "date-range-and",
        "birthdate=ge1980-01-01&birthdate=lt1981-01-01",
        ("pa-1980", "pa-1980-05", "pa-1980-05-15"),
        f"two prefixed values ANDed make a closed-open range ({DATE}, 2-year example)",
    ),
    _birthdate(
        "date-or-mixed-precision",
        "birthdate=1980-05,1981",
        ("pa-1980-05", "pa-1980-05-15", "pa-1981-01-01"),
        f"OR of two search values of different precision ({MULTI})",
    ),
    SearchCase(
        name="date-ap-overlapping-and-far",
        fixtures=APPROX_BIRTHDATES,
        resource_type="Patient",
        query="birthdate=ap1980-05-15",
        expected=("ap-exact", "ap-month"),
        note=f"ap: the search range overlapping the target always matches (1980-05 contains the "
        f"day); 1780 is never 'approximately' 1980 whatever today's date ({PREFIX})",
    ),
    SearchCase(
        name="date-ap-year",
        fixtures=APPROX_BIRTHDATES,
        resource_type="Patient",
        query="birthdate=ap1980",
        expected=("ap-exact", "ap-month"),
        note=f"ap at year precision: overlap with 1980 ({PREFIX})",
    ),
)

OFFSET_CASES = (
    _offset(
        "date-day-is-utc-day",
        "date=2020-01-01",
        ("ob-utc-noon", "ob-plus2"),
        f"UTC: 2020-01-01 is the UTC day; 23:30-05:00 is 04:30Z on the 2nd and "
        f"2020-01-02T00:30+02:00 is 22:30Z on the 1st ({DATE}, correct for time zones)",
    ),
    _offset(
        "date-next-utc-day",
        "date=2020-01-02",
        ("ob-minus5", "ob-day"),
        f"UTC: 2020-01-01T23:30:00-05:00 falls on 2020-01-02 in UTC; the date-only value is "
        f"contained in its own day ({DATE})",
    ),
    _offset(
        "date-instant-offset-previous-year",
        "date=2019-12-31",
        ("ob-instant",),
        f"UTC: the instant 2020-01-01T02:00:00.000+05:00 is 2019-12-31T21:00Z ({DATE})",
    ),
    _offset(
        "date-month-excludes-offset-instant",
        "date=2020-01",
        ("ob-minus5", "ob-utc-noon", "ob-plus2", "ob-day"),
        f"UTC: the month contains every value except the instant of 2019-12-31T21:00Z ({DATE})",
    ),
    _offset(
        "date-eq-second-utc",
        "date=2020-01-02T04:30:00Z",
        ("ob-minus5",),
        f"a second-precision search value matches the same instant written with another "
        f"offset; the whole day 2020-01-02 is not contained in one second ({PREFIX})",
    ),
    _offset(
        "date-eq-second-negative-offset",
        "date=2020-01-01T23:30:00-05:00",
        ("ob-minus5",),
        f"a search value with a negative offset is converted the same way ({DATE})",
    ),
    _offset(
        "date-eq-second-plus-offset-encoded",
        "date=2020-01-02T06:30:00%2B02:00",
        ("ob-minus5",),
        f"'+' in an offset is sent as %2B; 06:30+02:00 is 04:30Z ({DATE})",
    ),
    _offset(
        "date-eq-minute-precision",
        "date=2020-01-02T04:30Z",
        ("ob-minus5",),
        f"time without seconds is allowed in search values: the minute 04:30Z contains "
        f"04:30:00Z ({DATE}, 'minutes SHALL be present if an hour is present')",
    ),
    _offset(
        "date-eq-minute-plus-offset",
        "date=2020-01-02T00:30%2B02:00",
        ("ob-plus2",),
        f"the minute 00:30+02:00 is 22:30Z on 2020-01-01 ({DATE})",
    ),
    _offset(
        "date-gt-second",
        "date=gt2020-01-01T23:00:00Z",
        ("ob-minus5", "ob-day"),
        f"gt: values reaching beyond 23:00:00Z on the 1st; 22:30Z does not ({PREFIX})",
    ),
    _offset(
        "date-lt-second",
        "date=lt2020-01-01T23:00:00Z",
        ("ob-utc-noon", "ob-plus2", "ob-instant"),
        f"lt: values starting before 23:00:00Z on the 1st ({PREFIX})",
    ),
    _offset(
        "date-lt-time-includes-day",
        "date=lt2020-01-02T04:00:00Z",
        ("ob-utc-noon", "ob-plus2", "ob-instant", "ob-day"),
        f"lt a time: the day 2020-01-02 matches because it includes the part of the day before "
        f"04:00 (the spec's lt2013-01-14T10:00 example); 04:30Z does not ({DATE})",
    ),
    _offset(
        "date-gt-time-includes-day",
        "date=gt2020-01-02T10:00:00Z",
        ("ob-day",),
        f"gt a time: the day 2020-01-02 matches because it includes the part after 10:00 "
        f"(the spec's gt2013-01-14T10:00 example) ({DATE})",
    ),
    _offset(
        "date-eq-time-excludes-day",
        "date=2020-01-02T10:00:00Z",
        (),
        f"eq a time: a whole day is never contained in one second ({PREFIX})",
    ),
    _offset(
        "date-ne-utc-day",
        "date=ne2020-01-01",
        ("ob-minus5", "ob-day", "ob-instant"),
        f"UTC: ne the UTC day 2020-01-01 ({PREFIX})",
    ),
    _offset(
        "date-sa-utc-day",
        "date=sa2020-01-01",
        ("ob-minus5", "ob-day"),
        f"UTC: sa starts at or after 2020-01-02T00:00Z ({PREFIX})",
    ),
    _offset(
        "date-eb-utc-day",
        "date=eb2020-01-02",
        ("ob-utc-noon", "ob-plus2", "ob-instant"),
        f"UTC: eb ends at or before 2020-01-02T00:00Z ({PREFIX})",
    ),
    _offset(
        "date-no-offset-is-utc",
        "date=ge2020-01-01T22:00:00",
        ("ob-minus5", "ob-plus2", "ob-day"),
        f"UTC: a search time without offset is read in the server's zone, UTC here; 22:30Z "
        f"is after it, 12:00Z is not ({DATE}, 'the servers local time zone should be assumed')",
    ),
    _offset(
        "date-le-instant-boundary",
        "date=le2019-12-31T21:00:00Z",
        ("ob-instant",),
        f"le includes eq: the instant 21:00:00.000Z lies inside the second 21:00:00Z ({PREFIX})",
    ),
    _offset(
        "date-gt-instant-boundary",
        "date=gt2019-12-31T21:00:00Z",
        ("ob-minus5", "ob-utc-noon", "ob-plus2", "ob-day"),
        f"gt excludes a point inside the search second ({PREFIX})",
    ),
)

PERIOD_CASES = (
    _period(
        "date-period-eq-month-contains-closed",
        "date=2020-01",
        ("en-closed",),
        f"eq: only the closed period lies inside January; open periods are unbounded on one "
        f"side and so never contained ({DATE}, 'a missing upper boundary is greater than any "
        f"actual date')",
    ),
    _period(
        "date-period-eq-year",
        "date=2020",
        ("en-closed", "en-feb"),
        f"eq: closed periods inside 2020; open ones are not contained ({DATE})",
    ),
    _period(
        "date-period-ge-open-end",
        "date=ge2020-01-18",
        ("en-closed", "en-open-end", "en-feb"),
        f"ge: a period with no end reaches beyond any date ({DATE}, ge example 'from 21-Jan "
        f"2013 onwards')",
    ),
    _period(
        "date-period-le-open-start",
        "date=le2020-01-18",
        ("en-closed", "en-open-end", "en-open-start"),
        f"le: a period with no start begins before any date; a period starting on the 15th "
        f"starts before the 18th ({DATE})",
    ),
    _period(
        "date-period-lt",
        "date=lt2020-01-12",
        ("en-closed", "en-open-start"),
        f"lt: periods starting before 2020-01-12 ({PREFIX})",
    ),
    _period(
        "date-period-lt-start-boundary",
        "date=lt2020-01-10",
        ("en-open-start",),
        f"lt: a period starting at 2020-01-10T00:00 does not start before that day ({PREFIX})",
    ),
    _period(
        "date-period-gt",
        "date=gt2020-01-25",
        ("en-open-end", "en-feb"),
        f"gt: periods reaching beyond 2020-01-25, including the unbounded one ({PREFIX})",
    ),
    _period(
        "date-period-sa",
        "date=sa2020-01-12",
        ("en-open-end", "en-feb"),
        f"sa: periods starting after 2020-01-12; the open-start period starts before any date "
        f"({DATE}, sa example)",
    ),
    _period(
        "date-period-sa-end-day",
        "date=sa2020-01-20",
        ("en-feb",),
        f"sa: the period ending 2020-01-20 and the one started on the 15th do not start after "
        f"the 20th ({PREFIX})",
    ),
    _period(
        "date-period-eb",
        "date=eb2020-01-12",
        ("en-open-start",),
        f"eb: only a period ended before 2020-01-12; the open-end one never ends ({DATE}, eb "
        f"example)",
    ),
    _period(
        "date-period-ne-month",
        "date=ne2020-01",
        ("en-open-end", "en-open-start", "en-feb"),
        f"ne: periods not contained in January; en-none has no period and does not match "
        f"({PREFIX})",
    ),
    _period(
        "date-period-overlap-range",
        "date=ge2020-01-01&date=le2020-01-31",
        ("en-closed", "en-open-end", "en-open-start"),
        f"ge and le together select periods overlapping January: the open-start period ends "
        f"2020-01-05 ({DATE})",
    ),
    SearchCase(
        name="date-period-ap",
        fixtures=APPROX_PERIODS,
        resource_type="Encounter",
        query="date=ap2020-01-15",
        expected=("ap-en-overlap", "ap-en-open"),
        note=f"ap: periods overlapping the search day always match; one in 1820 never does "
        f"({PREFIX})",
    ),
    SearchCase(
        name="date-timing-and-periods",
        fixtures=TIMINGS,
        resource_type="Observation",
        query="date=2020-03",
        expected=("ob-timing-bounds", "ob-period-march"),
        note=f"a Timing is searched by its outer limits (boundsPeriod), an Observation Period is "
        f"explicit; the open period is not contained in March ({DATE}, Timing row)",
    ),
    SearchCase(
        name="date-timing-outer-limits-only",
        fixtures=TIMINGS,
        resource_type="Observation",
        query="date=ge2020-03-15&date=le2020-03-20",
        expected=("ob-timing-bounds", "ob-period-open"),
        note=f"Timing: only the outer limits matter, so a daily schedule over March overlaps "
        f"the 15th-20th; the period 2-9 March does not ({DATE})",
    ),
)

CASES: tuple[SearchCase, ...] = PRECISION_CASES + OFFSET_CASES + PERIOD_CASES
