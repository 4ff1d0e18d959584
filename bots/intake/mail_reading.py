"""What in a real shared inbox is a request, who sent it, and which words are the ask.

Shared inboxes hold more than customers' requests: agents forwarding a customer's mail,
form robots writing from `noreply@`, reply chains quoting our own answers (with their
order numbers and prices), out-of-office replies without the `Auto-Submitted` header,
delivery and read reports, calendar answers, our own outbound mail echoed back, spam,
and bodies the bot cannot read at all (TNEF, S/MIME, an HTML "view in browser" stub).
Each rule here is pure and tested on a corpus of such mails (tests/fixtures/inbox/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.utils import getaddresses

from bots.intake.extract import normalise_email

# -- not requests ----------------------------------------------------------------------------

_AUTO_SUBJECT = re.compile(
    r"(?i)^\s*(?:out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response)|"
    r"autoreply|auto:|abwesenheit|abwesenheitsnotiz|automatische antwort|"
    r"r[ée]ponse automatique|absence du bureau|respuesta autom[áa]tica|fuera de la oficina|"
    r"risposta automatica|fuori sede|afwezig|automatisch antwoord|autosvar|"
    r"i am (?:currently )?out of|i'?m (?:currently )?out of)")
_AUTO_BODY = re.compile(
    r"(?i)\b(?:i am|i'm|ich bin)\s+(?:currently\s+)?(?:out of (?:the )?office|away|on (?:annual )?"
    r"leave|on holiday|on vacation|nicht im b[üu]ro|abwesend)\b.{0,200}?\b(?:return|back|"
    r"zur[üu]ck)\b", re.DOTALL)
_REPORT_SUBJECT = re.compile(
    r"(?i)^\s*(?:delivery status notification|undeliverable|undelivered mail|mail delivery "
    r"(?:failed|failure|system)|returned mail|non[- ]delivery|read:|gelesen:|lu\s?:|"
    r"read receipt|return receipt|unzustellbar|zustellung fehlgeschlagen)")
_CALENDAR_SUBJECT = re.compile(
    r"(?i)^\s*(?:invitation|updated invitation|accepted|declined|tentative(?:ly accepted)?|"
    r"einladung|zugesagt|abgesagt|angenommen|abgelehnt|invitation mise à jour|accepté|refusé)"
    r"\s*:")
_PRECEDENCE = frozenset({"bulk", "junk", "auto_reply", "list"})


def not_a_request(msg: Message, subject: str, body: str) -> str | None:
    """Why this mail is not a customer's request (the reason quarantines it), or None."""
    header = msg.get
    if str(header("X-Refund-Case") or "").strip():
        return "our own outbound message echoed back (it carries X-Refund-Case), not a request"
    if str(header("X-Spam-Flag") or "").strip().upper() == "YES" or str(
            header("X-Spam-Status") or "").strip().lower().startswith("yes"):
        return "marked as spam by the mail server, not a request"
    if any(str(header(h) or "").strip() for h in ("X-Autoreply", "X-Autorespond")) or \
            str(header("Precedence") or "").strip().lower() in _PRECEDENCE:
        return "an automatic reply (its headers say so), not a customer request"
    types = {p.get_content_type() for p in msg.walk()}
    if "text/calendar" in types or "application/ics" in types or _CALENDAR_SUBJECT.match(
            subject):
        return "a calendar invitation or answer, not a customer request"
    if "message/disposition-notification" in types or "message/delivery-status" in types or \
            _REPORT_SUBJECT.match(subject):
        return "a delivery or read report, not a customer request"
    if _AUTO_SUBJECT.match(subject) or _AUTO_BODY.search(body[:2000]):
        return "an automatic out-of-office reply, not a customer request"
    return None


# -- unreadable bodies -------------------------------------------------------------------------

_VIEW_IN_BROWSER = re.compile(
    r"(?i)view (?:this (?:e-?mail|message) )?(?:in|on) (?:your|a|the) (?:web )?browser|"
    r"(?:e-?mail|message) (?:is )?not displayed correctly|im browser (?:ansehen|anzeigen|öffnen)|"
    r"voir (?:la version|cet e-?mail) (?:en ligne|dans (?:votre|le) navigateur)|"
    r"ver (?:este correo )?en (?:el|tu) navegador")


def unreadable(msg: Message, body: str) -> str | None:
    """Why the customer's words cannot be read here (quarantined, never an empty ask)."""
    types = [p.get_content_type() for p in msg.walk()]
    readable = {"text/plain", "text/html"} & set(types)
    if any(t in ("application/pkcs7-mime", "application/x-pkcs7-mime", "multipart/encrypted",
                 "application/pgp-encrypted") for t in types):
        return "the message is encrypted (S/MIME or PGP): the bot cannot read it"
    if not body.strip() and any(t == "application/ms-tnef" or _filename(p) == "winmail.dat"
                                for t, p in zip(types, msg.walk(), strict=True)):
        return "the text is only in a winmail.dat (TNEF) attachment the bot cannot read"
    text = " ".join(body.split())
    if text and len(text) < 400 and _VIEW_IN_BROWSER.search(text):
        return ("the mail shows only a 'view in browser' link, not the customer's text: the "
                "bot cannot read it")
    if not readable and not body.strip():
        return "the message has no text part the bot can read"
    return None


def _filename(part: Message) -> str:
    try:
        return (part.get_filename() or "").lower()
    except Exception:  # noqa: BLE001 - a broken header is no file name
        return ""


# -- forwarded mail and robot senders ---------------------------------------------------------


@dataclass(frozen=True)
class Original:
    """The customer's mail inside an agent's forward."""

    name: str
    email: str
    text: str


_FORWARD_HEAD = re.compile(
    r"(?im)^[ \t>]*(?:-{2,}\s*(?:forwarded message|original message|weitergeleitete nachricht|"
    r"ursprüngliche nachricht|message transféré|message d'origine|mensaje reenviado|"
    r"mensaje original|messaggio inoltrato)\s*-{2,}|begin forwarded message:)\s*$")
_FROM_LINE = re.compile(r"(?im)^[ \t>]*(?:from|von|de|da|van)\s*:\s*(.+)$")
_FWD_SUBJECT = re.compile(r"(?i)^\s*(?:fwd?|wg|tr|rv|i)\s*:")


def forwarded(msg: EmailMessage, body: str, subject: str) -> Original | None:
    """The original sender and text of a forwarded mail (attached .eml or inline), or None."""
    for part in msg.walk():
        if part.get_content_type() == "message/rfc822":
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, EmailMessage):
                name, email = _first_address(str(inner.get("From") or ""))
                if email:
                    inner_body = inner.get_body(preferencelist=("plain",))
                    text = inner_body.get_content() if inner_body is not None else ""
                    return Original(name, email, f"{inner.get('Subject') or ''}\n\n{text}")
    head = _FORWARD_HEAD.search(body)
    if head is None and not _FWD_SUBJECT.match(subject):
        return None
    rest = body[head.end():] if head else body
    line = _FROM_LINE.search(rest)
    if line is None or (head is None and line.start() > 400):
        return None
    name, email = _first_address(line[1])
    if not email:
        return None
    return Original(name, email, rest[line.end():])


def _first_address(raw: str) -> tuple[str, str | None]:
    raw = raw.replace("[mailto:", "<").replace("]", ">") if "[mailto:" in raw else raw
    for display, addr in getaddresses([raw]):
        if email := normalise_email(addr):
            return display.strip().strip('"'), email
    found = re.search(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", raw)
    return "", normalise_email(found[0]) if found else None


_ROBOT_LOCAL = re.compile(r"(?i)^(?:no-?reply|do-?not-?reply|donotreply|mailer|forms?|"
                          r"webform|notifications?|bounce)[\w.+-]*$")
_VIA = re.compile(r"(?i)\bvia\b")
_BODY_EMAIL = re.compile(r"(?im)^\s*(?:e-?mail|email address|e-?mail-adresse|courriel|correo)"
                         r"\s*[:=]\s*(\S+@\S+)")


def robot_sender(sender: str, display: str) -> bool:
    """Mail sent through a form robot or a group ("Ada via Shop", noreply@...)."""
    return bool(_ROBOT_LOCAL.match(sender.split("@", 1)[0]) or _VIA.search(display or ""))


def customer_behind_robot(reply_to: str | None, sender: str, body: str) -> str | None:
    """The customer of a robot's mail: a Reply-To that is not a robot, else an email field."""
    if reply_to and reply_to != sender and not robot_sender(reply_to, ""):
        return reply_to
    found = _BODY_EMAIL.search(body)
    return normalise_email(found[1].strip(".,;<>")) if found else None


# -- the new text of a reply ------------------------------------------------------------------

_QUOTE_HEAD = re.compile(
    r"(?im)^[ \t]*(?:"
    # Gmail, Apple Mail ("On 2 Dec 2026, at 10:00, Ada wrote:"), wrapped once at most
    r"on\b[^\n]{1,200}?(?:\n[^\n]{0,100}?)?\bwrote:|"
    r"am\b.{1,200}?\bschrieb.{0,100}?:|"
    r"le\b.{1,200}?\ba [ée]crit\s?:|"
    r"el\b.{1,200}?\bescribi[óo]\s?:|"
    r"il\b.{1,200}?\bha scritto\s?:|"
    r"op\b.{1,200}?\bschreef.{0,100}?:|"
    r"-{2,}\s*(?:original message|ursprüngliche nachricht|message d'origine|mensaje original)"
    r"\s*-{2,}|"
    r"_{10,}\s*$|"  # Outlook's rule above the quoted header
    r"from:\s.+\n(?:.*\n){0,3}?\s*(?:sent|date|gesendet|envoy[ée]|enviado):\s)")
_SIGNATURE = re.compile(r"(?m)^(?:-- ?|—)\s*$")
_FOOTER_LINE = re.compile(
    r"(?i)share capital|registered (?:office|in)|company (?:no|number|registration)|"
    r"stammkapital|grundkapital|amtsgericht|handelsregister|gesch[äa]ftsf[üu]hr|"
    r"capital social|capital de|rcs\b|siret|vat (?:no|number|reg)|ust-?id|"
    r"sent from my (?:iphone|ipad|android|phone|galaxy)|von meinem iphone gesendet")


def new_text(text: str) -> str:
    """The words written in this mail: without quoted history, signature or company footer.

    Quoted history is everything after the first "On ... wrote:", Outlook "From: ...
    Sent: ..." header or "Original Message" line, and every line starting with ">".
    An order number or price that appears only there is context, not the request.
    """
    head = _QUOTE_HEAD.search(text)
    if head is not None and head.start() > 0:
        text = text[:head.start()]
    sig = _SIGNATURE.search(text)
    if sig is not None and sig.start() > 0:
        text = text[:sig.start()]
    lines = [line for line in text.splitlines()
             if not line.lstrip().startswith(">") and not _FOOTER_LINE.search(line)]
    return "\n".join(lines)
