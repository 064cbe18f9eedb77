"""TDM-Rep's site-wide file, ``/.well-known/tdmrep.json``: rights reservations by path.

The W3C TDM Reservation Protocol (community group final report) lets a rightsholder
reserve text-and-data-mining rights three ways: the ``tdm-reservation`` response header
(checked per image in ``politeness.tdm_reserved``), HTML metadata (not relevant to image
bytes), and this file at the origin: a JSON array of rules such as
``{"location": "/images/*", "tdm-reservation": 1, "tdm-policy": "https://..."}``.

How clipcrawl reads it:
- ``location`` is matched against the URL's path (query excluded, percent-escapes
  decoded on both sides) as a prefix, ``*`` matching any run of characters and a final
  ``$`` anchoring the end, the way robots.txt paths match. ``/`` covers the whole origin.
- When several rules match, the most specific (longest) ``location`` wins; on a tie the
  reserving rule wins, so an ambiguous file never loosens a reservation.
- A 2xx body is parsed; a malformed file (not JSON, not an array) gives no rules, and
  malformed entries are skipped while well-formed ones still apply; both are counted.
- A 4xx means the site publishes no file: no reservation. A 5xx, a 429 or an unreachable
  host also gives no reservation (the header rule still guards each image, and a broken
  optional file must not stop the crawl of a site whose robots.txt allows it), but it is
  counted and asked again after ``RETRY_FAILED_SECONDS`` instead of the full cache time.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import time
import urllib.parse
from collections.abc import Callable

from clipcrawl.transforms.origin_cache import DEFAULT_TTL_SECONDS, OriginCache
from clipcrawl.transforms.robots import RobotsFetch

TDMREP_PATH = "/.well-known/tdmrep.json"
MAX_TDMREP_BYTES = 500 * 1024
RETRY_FAILED_SECONDS = 600.0  # a 5xx/unreachable tdmrep.json is asked again after 10 minutes

# Problem kinds, counted per worker (``Fetcher.drain_counts``) as ``tdmrep_{kind}``.
INVALID = "invalid"
UNREACHABLE = "unreachable"


@functools.lru_cache(maxsize=4096)
def _location_regex(location: str) -> re.Pattern[str]:
    anchored = location.endswith("$")
    body = urllib.parse.unquote(location[:-1] if anchored else location)
    return re.compile(".*".join(re.escape(part) for part in body.split("*")) + ("$" if anchored else ""), re.DOTALL)


@dataclasses.dataclass(frozen=True)
class TdmRule:
    """One entry of tdmrep.json."""

    location: str
    reserved: bool
    policy: str | None = None

    def matches(self, path: str) -> bool:
        return _location_regex(self.location).match(urllib.parse.unquote(path)) is not None


@dataclasses.dataclass(frozen=True)
class TdmRepRules:
    """An origin's reservations; ``problem_kind`` is set when the file was broken or unreachable."""

    tdmrep_url: str
    rules: tuple[TdmRule, ...] = ()
    problem_kind: str | None = None
    problem: str = ""

    def rule_for(self, path: str) -> TdmRule | None:
        """The rule governing ``path``: the longest matching location, reserving on a tie."""
        matching = [rule for rule in self.rules if rule.matches(path)]
        return max(matching, key=lambda rule: (len(rule.location), rule.reserved), default=None)

    def reservation_reason(self, url: str) -> str | None:
        """Why ``url`` may not be mined, or None when no rule reserves it."""
        path = urllib.parse.urlsplit(url).path or "/"
        rule = self.rule_for(path)
        if rule is None or not rule.reserved:
            return None
        policy = f", tdm-policy {rule.policy}" if rule.policy else ""
        return (f"tdmrep.json: {self.tdmrep_url} reserves text and data mining rights for {path} "
                f"(location {rule.location!r}, tdm-reservation 1{policy})")


def tdmrep_url_for(url: str) -> str:
    """The tdmrep.json URL governing ``url``: same scheme, host and port."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], TDMREP_PATH, "", ""))


def parse_tdmrep(body: bytes) -> tuple[tuple[TdmRule, ...], list[str]]:
    """The well-formed rules of a tdmrep.json body and a note per skipped entry.

    Raises ``ValueError`` when the body is not a JSON array at all.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    if not isinstance(document, list):
        raise ValueError(f"not a JSON array but {type(document).__name__}")
    rules: list[TdmRule] = []
    skipped: list[str] = []
    for index, entry in enumerate(document):
        rule = _rule_from_entry(entry)
        if rule is None:
            skipped.append(f"entry {index} is not {{location, tdm-reservation 0|1}}")
        else:
            rules.append(rule)
    return tuple(rules), skipped


def _rule_from_entry(entry: object) -> TdmRule | None:
    if not isinstance(entry, dict):
        return None
    location, reservation, policy = entry.get("location"), entry.get("tdm-reservation"), entry.get("tdm-policy")
    if not isinstance(location, str) or not location:
        return None
    if isinstance(reservation, bool) or reservation not in (0, 1, "0", "1"):
        return None
    return TdmRule(location, reservation in (1, "1"), policy if isinstance(policy, str) and policy else None)


def rules_from_fetch(tdmrep_url: str, fetched: RobotsFetch) -> TdmRepRules:
    """What a tdmrep.json fetch outcome means (see the module docstring)."""
    if fetched.error is not None:
        return TdmRepRules(tdmrep_url, problem_kind=UNREACHABLE, problem=f"unreachable ({fetched.error})")
    status = fetched.status or 0
    if status == 429 or status >= 500:
        return TdmRepRules(tdmrep_url, problem_kind=UNREACHABLE, problem=f"answered HTTP {status}")
    if not 200 <= status < 300:
        return TdmRepRules(tdmrep_url)  # no file: nothing reserved by it
    try:
        rules, skipped = parse_tdmrep(fetched.body)
    except ValueError as exc:
        return TdmRepRules(tdmrep_url, problem_kind=INVALID, problem=str(exc))
    if skipped:
        return TdmRepRules(tdmrep_url, rules, problem_kind=INVALID, problem="; ".join(skipped[:3]))
    return TdmRepRules(tdmrep_url, rules)


def _lifetime(rules: TdmRepRules) -> float:
    return RETRY_FAILED_SECONDS if rules.problem_kind == UNREACHABLE else float("inf")


class TdmRepCache:
    """One tdmrep.json fetch per origin per ``ttl`` seconds (failures: sooner), shared by threads.

    ``load`` turns a tdmrep.json URL into ``TdmRepRules`` (the HTTP work, and counting).
    """

    def __init__(self, load: Callable[[str], TdmRepRules], ttl: float = DEFAULT_TTL_SECONDS, size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cache: OriginCache[TdmRepRules] = OriginCache(load, ttl=ttl, size=size, clock=clock, ttl_for=_lifetime)

    def rules_for(self, url: str) -> TdmRepRules:
        return self._cache.get(tdmrep_url_for(url))

    def reservation_reason(self, url: str) -> str | None:
        return self.rules_for(url).reservation_reason(url)
