"""Voice intake: a folder of voicemail / IVR recordings, each one a request.

Next to `call-0042.wav` an optional sidecar `call-0042.json` written by the telephony
system gives the caller id, the time and a call id:

    {"caller": "+44 20 7946 0123", "received_at": "2026-12-01T09:14:00Z",
     "call_id": "VM-0042", "name": "Jane Doe"}

The recording is transcribed offline (`bots.intake.transcribe`). The caller id, in
E.164, identifies the customer as on the phone channel. What the machine heard is
never taken on trust for money:

- an order number heard with a confidence below `min_confidence` is a doubt: the case
  escalates with the transcript and the recording's path (`RefundRequest.doubts`);
- no order number heard and no caller id: a doubt too (nobody to look up);
- an order number heard surely is still checked against the caller id when the case is
  processed (`bots.decide.heard`): an order of another phone number, or no such order,
  escalates, never rejects.

No amount is read from speech: the policy decides the amount from the order's facts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bots.intake.extract import classify_reason, mask_secrets, normalise_phone
from bots.intake.transcribe import AudioError, Transcript, transcribe_file
from bots.models import Channel, IntakeItem, Quarantined, RefundRequest

CHANNEL = Channel.VOICE.value
SUFFIXES = (".wav", ".mp3", ".ogg", ".flac")
MAX_BYTES = 100_000_000  # one recording; larger ones are quarantined unread
_CALLER_KEYS = ("caller", "caller_id", "callerid", "from", "ani", "phone")
_TIME_KEYS = ("received_at", "time", "timestamp", "start", "started_at")
_ID_KEYS = ("call_id", "id", "uniqueid")


def read_voice_folder(path: Path, *, default_region: str | None = None,
                      min_confidence: float = 1.0,
                      transcriber: Callable[[Path], Transcript] = transcribe_file
                      ) -> Iterator[IntakeItem]:
    """One item per recording in `path` (a folder, or one file), in name order."""
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
        and not p.name.startswith("."))
    for file in files:
        yield read_recording(file, default_region=default_region,
                             min_confidence=min_confidence, transcriber=transcriber)


def _sidecar(file: Path) -> tuple[dict[str, Any], str]:
    """The sidecar's fields, and a problem in words when it is there but unreadable."""
    side = file.with_suffix(".json")
    if not side.is_file():
        return {}, ""
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {}, f"sidecar {side.name} is unreadable ({type(exc).__name__})"
    if not isinstance(data, dict):
        return {}, f"sidecar {side.name} is not a JSON object"
    return data, ""


def _first(data: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str | int) and str(value).strip():
            return str(value).strip()[:200]
    return None


def _when(value: str | None, file: Path) -> datetime:
    if value:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return when if when.tzinfo else when.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.fromtimestamp(file.stat().st_mtime, UTC)


def read_recording(file: Path, *, default_region: str | None = None,
                   min_confidence: float = 1.0,
                   transcriber: Callable[[Path], Transcript] = transcribe_file) -> IntakeItem:
    """One recording (and its sidecar) as a request, or quarantined when it is no audio."""
    try:
        size = file.stat().st_size
        if size > MAX_BYTES:
            return Quarantined(CHANNEL, f"file:{file.name}:{size}",
                               f"recording {file.name} is larger than {MAX_BYTES} bytes",
                               source_ref=str(file))
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
    except OSError as exc:
        return Quarantined(CHANNEL, f"file:{file.name}", f"cannot read {file.name}: {exc}",
                           source_ref=str(file))
    side, problem = _sidecar(file)
    call_id = _first(side, _ID_KEYS)
    source_id = f"call:{call_id}" if call_id else f"sha256:{digest}"
    try:
        heard = transcriber(file)
    except AudioError as exc:
        return Quarantined(CHANNEL, source_id, f"recording is not usable audio: {exc}",
                           source_ref=str(file))
    raw_caller = _first(side, _CALLER_KEYS)
    caller = normalise_phone(raw_caller, default_region)
    doubts = _doubts(file, heard, caller, min_confidence, problem)
    text = mask_secrets(f"Voicemail (machine transcript, {heard.seconds:.0f} s): "
                        f"{heard.text or '(nothing recognised)'}")
    return RefundRequest(
        channel=CHANNEL, source_id=source_id, received_at=_when(_first(side, _TIME_KEYS), file),
        reason_text=text, customer_name=_first(side, ("name", "caller_name")),
        customer_phone=caller, order_number=heard.order_number
        if heard.confidence >= min_confidence else None,
        reason_category=classify_reason(heard.text), reply_to=caller,
        source_ref=str(file), doubts=doubts, language="en")  # the model is en-US


def _doubts(file: Path, heard: Transcript, caller: str | None, min_confidence: float,
            problem: str) -> tuple[str, ...]:
    evidence = f"transcript: '{heard.text[:300]}'; recording: {file}"
    doubts = []
    if heard.order_number and heard.confidence < min_confidence:
        doubts.append(f"the order number in the voicemail is unclear (heard "
                      f"{heard.order_number}, confidence {heard.confidence:.2f} below "
                      f"{min_confidence:.2f}); {evidence}")
    elif not heard.order_number and caller is None:
        doubts.append(f"no order number could be heard in the voicemail and there is no "
                      f"caller id to find the customer by; {evidence}")
    if problem and doubts:
        doubts[-1] += f"; {problem}"
    return tuple(doubts)
