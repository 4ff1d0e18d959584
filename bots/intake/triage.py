"""Every new request's language and priority, set before it is stored.

The language says which templates answer the customer; the priority (from
`bots.intake.sentiment`) says which case a runner takes first and where an escalated
case sits in the workbook. Neither ever reaches the policy: the amount and the
eligibility are decided on the order's facts alone. The words that drove the priority
go with the request (`RefundRequest.triage`) into the case's audit trail.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import replace

from bots.intake.language import detect_language, detect_languages
from bots.intake.sentiment import score
from bots.models import IntakeItem, RefundRequest


def triage(req: RefundRequest) -> RefundRequest:
    """The request with its language (when not set by the channel) and priority."""
    return _triaged(req, req.language or detect_language(req.reason_text))


def _triaged(req: RefundRequest, language: str | None) -> RefundRequest:
    found = score(req.reason_text, language)
    return replace(req, language=language, priority=max(req.priority, found.priority),
                   triage="; ".join(t for t in (req.triage, found.describe()) if t))


def triage_all(items: Iterable[IntakeItem]) -> Iterator[IntakeItem]:
    """`triage` every request of a source's stream; quarantined items pass unchanged."""
    for item in items:
        yield triage(item) if isinstance(item, RefundRequest) else item


def triage_new(reqs: Sequence[RefundRequest], known: Collection[tuple[str, str]]
               ) -> list[RefundRequest]:
    """`triage` the requests not `known` (by channel and source id); the others as they are.

    A request already stored is not stored again, so its language and priority would be
    worked out for nothing (most of the cost of reading a file again). The languages of
    the new ones are detected in one batch.
    """
    new = [req for req in reqs if (req.channel, req.source_id) not in known]
    detected = iter(detect_languages([r.reason_text for r in new if not r.language]))
    done = {id(req): _triaged(req, req.language or next(detected)) for req in new}
    return [done.get(id(req), req) for req in reqs]
