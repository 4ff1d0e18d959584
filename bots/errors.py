"""The two kinds of failure every serious RPA framework distinguishes.

A `BusinessException` is an answer: the case ends with its reason and is never
retried. A `SystemException` is an accident (timeout, 500, maintenance, selector
missing, expired session): the attempt is retried with backoff and leaves a
screenshot and a trace behind.
"""

from __future__ import annotations


class ConfigError(Exception):
    """Settings are missing or invalid: the message says what to fix."""


class BusinessException(Exception):
    """The case cannot be refunded as asked; the message is shown to ops staff."""


class SystemException(Exception):
    """Something outside the case went wrong; trying again may work."""


class SessionExpired(SystemException):
    """The legacy app sent us back to its login page mid-flow."""


class AppUnavailable(SystemException):
    """A 5xx page, a maintenance page or a hung request."""


class NoAnswer(AppUnavailable):
    """The app did not answer in time: whether it acted on the request is unknown.

    For a refund submit this is the dangerous case: the portal may still be working on
    it, so the bot waits out the in-flight grace before it reads the history as final.
    """


class SelectorMissing(SystemException):
    """An element the selectors file names is not on the page: the UI changed."""


class UnknownPage(SystemException):
    """The app shows a page the selectors do not recognise: never read as an answer.

    Neither the page the bot expected nor that page's known "empty" / "not found"
    variant: an interstitial nobody described, a changed layout, an error page.
    """


class UnreadableValue(SystemException):
    """An element is there but its value is empty or not in the app's format."""


class TooLateToSubmit(SystemException):
    """The runner's last check before the click is older than its lease allows.

    It was paused between that check and the click (a VM pause, a stopped process, a
    blocked loop) for so long that another runner may have taken the case over and paid:
    nothing is submitted (the confirmation is declined), and the case is tried again.
    """


class RefundRefused(SystemException):
    """The portal refused the refund form (e.g. above the remaining balance).

    A system exception because the bot checked the balance just before: a refusal
    means the portal changed under us, and the next attempt re-reads it.
    """


class LoginRefused(Exception):
    """A legacy app refused the bot's user name or password.

    Not a system exception: trying again cannot help and locks the account. The app's
    work stops at once, the run exits 1 with this message, no case is marked failed, and
    the password is not tried again in the same run (see `bots.legacy.base.LoginGuard`).
    """


class AmbiguousOutcome(Exception):
    """We cannot tell whether a submitted refund went through: a human must look."""


class SubmitInFlight(Exception):
    """A refund submit may still be running on the portal: wait, never submit again yet.

    Not a failure: the case waits (without spending an attempt) until the in-flight grace
    period has passed, then the refund history is read again.
    """

    def __init__(self, message: str, wait_seconds: float) -> None:
        super().__init__(message)
        self.wait_seconds = wait_seconds
