"""Offline speech-to-text for voicemail: PocketSphinx, constrained for order numbers.

PocketSphinx (`pocketsphinx` on PyPI) ships an en-US acoustic model and dictionary in
its wheel: nothing is downloaded. Its general language model transcribes a spoken order
number badly, so a recording is decoded twice, with two small language models built
here (offline, in about a second, with PocketSphinx's own `ArpaBoLM`):

1. the *call* model: what refund voicemails say (greetings, "my order number is O R D
   ...", the reason words, amounts in words, "please refund me"), in a vocabulary of
   about 90 words. Its output is the transcript kept as the request's text, and it
   finds where the order number starts ("O R D", or "order [number] [is]").
2. the *digits* model: only the ten digits. The audio from the end of "O R D" is
   decoded again with it and the first six digits are the order number.

PocketSphinx gives no usable per-word confidence in this mode, so the confidence is
the agreement of the two passes on the six digits (1.0: both heard the same digits).
Two differently constrained decoders agreeing is evidence; one of them alone is not.
Below the source's `min_confidence` the caller's request escalates with the transcript
and the recording's path (`bots.intake.voice`).

Audio is decoded and resampled to 16 kHz mono 16-bit by miniaudio (WAV, MP3, FLAC and
Ogg Vorbis, from its bundled decoders): the rate the acoustic model was trained on.
"""

from __future__ import annotations

import io
import random
import re
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import miniaudio
from pocketsphinx import Decoder, get_model_path
from pocketsphinx.lm import ArpaBoLM

RATE = 16_000
FRAMES_PER_SECOND = 100  # PocketSphinx's frame rate: 10 ms
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ORDER_DIGITS = 6  # ORD-100123: the order system's numbers
MAX_SECONDS = 300  # longer recordings are cut: a voicemail box stops at a few minutes

_INTRO = ("hello", "hi", "good morning", "hello this is jane calling",
          "hi my name is john", "hello it is about a refund")
_ORDER = ("about my order", "my order number is", "order", "it is about order",
          "calling about order", "the order number is")
_REASONS = ("the jacket arrived damaged", "the parcel never arrived", "it was the wrong size",
            "the item is broken", "i got the wrong item", "it was not received",
            "it does not work", "i changed my mind", "it arrived late",
            "the mug is chipped", "it arrived damaged", "it is broken", "it is defective",
            "it is faulty", "i was charged twice", "it does not fit")
_AMOUNTS = ("forty nine euros", "twelve pounds fifty", "one hundred dollars", "twenty euros",
            "ninety nine euros", "thirty pounds", "fifteen euros", "sixty dollars")
_ASKS = ("please refund me", "i would like a refund", "please refund", "thank you",
         "can i get my money back", "please call me back", "thanks bye", "i am very angry",
         "this is urgent", "otherwise i will do a chargeback")


class AudioError(Exception):
    """The file is not audio miniaudio can decode (or is empty)."""


@dataclass(frozen=True)
class Transcript:
    text: str  # what the call model heard, the whole message
    order_number: str | None  # ORD-xxxxxx from the digits pass, None when none was heard
    confidence: float  # 0..1: agreement of the two passes on the order number's digits
    seconds: float  # length of the recording
    first_pass_digits: str = ""  # what the call model heard after "O R D" (evidence)


def load_pcm(path: Path) -> bytes:
    """16 kHz mono signed 16-bit PCM of an audio file (at most MAX_SECONDS)."""
    try:
        sound = miniaudio.decode_file(str(path), output_format=miniaudio.SampleFormat.SIGNED16,
                                      nchannels=1, sample_rate=RATE)
    except (miniaudio.DecodeError, OSError, ValueError) as exc:
        raise AudioError(f"cannot decode {path.name}: {exc}") from exc
    pcm = bytes(sound.samples.tobytes())[:MAX_SECONDS * RATE * 2]
    if len(pcm) < RATE // 5 * 2:  # under 0.2 s: nothing said
        raise AudioError(f"{path.name} holds no sound (under 0.2 s)")
    return pcm


def _corpus(rng: random.Random) -> list[str]:
    sentences = []
    for _ in range(3000):
        digits = " ".join(rng.choice(DIGITS) for _ in range(ORDER_DIGITS))
        order = f"{rng.choice(_ORDER)} o r d {digits}"
        parts = [rng.choice(_INTRO), order, rng.choice(_REASONS)]
        if rng.random() < 0.3:
            parts[1], parts[2] = parts[2], parts[1]
        if rng.random() < 0.4:
            parts.append(f"{rng.choice(('i would like a refund of', 'it cost'))} "
                         f"{rng.choice(_AMOUNTS)}")
        parts.append(rng.choice(_ASKS))
        sentences.append(" ".join(parts))
    return sentences


def _arpa(sentences: list[str], path: Path) -> None:
    model = ArpaBoLM(text="\n".join(sentences), add_start=True, discount_mass=0.1)
    model.compute()
    out = io.StringIO()
    model.write(out)
    path.write_text(out.getvalue(), encoding="utf-8")


@cache
def _models() -> tuple[Path, Path, Path]:
    """(call LM, digits LM, dictionary), built once per process in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="refund-bots-asr-"))
    rng = random.Random(17)  # the same models every time
    calls = _corpus(rng)
    digits = [" ".join(rng.choice(DIGITS) for _ in range(rng.randint(6, 10)))
              for _ in range(3000)]
    _arpa(calls, folder / "calls.arpa")
    _arpa(digits, folder / "digits.arpa")
    words = {w for s in calls for w in s.split()}
    full = Path(get_model_path("en-us/cmudict-en-us.dict"))
    lines = [line for line in full.read_text(encoding="utf-8").splitlines(keepends=True)
             if re.sub(r"\(\d+\)$", "", line.split(" ", 1)[0]) in words]
    (folder / "words.dict").write_text("".join(lines), encoding="utf-8")
    return folder / "calls.arpa", folder / "digits.arpa", folder / "words.dict"


@cache
def _decoder(which: str) -> Decoder:
    calls, digits, words = _models()
    return Decoder(hmm=get_model_path("en-us/en-us"), dict=str(words),
                   lm=str(calls if which == "calls" else digits), loglevel="FATAL")


def _decode(decoder: Decoder, pcm: bytes) -> list[tuple[str, int, int]]:
    """(word, start frame, end frame) of the best hypothesis; fillers left out."""
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    out = []
    for seg in decoder.seg():
        word = re.sub(r"\(\d+\)$", "", seg.word)
        if not word.startswith(("<", "[")):
            out.append((word, seg.start_frame, seg.end_frame))
    return out


def _order_start(words: list[tuple[str, int, int]]) -> tuple[int, int] | None:
    """(index after the keyword, its end frame): after "o r d", else after "order ..."."""
    tokens = [w for w, _, _ in words]
    for i in range(len(tokens) - 2):
        if tokens[i:i + 3] == ["o", "r", "d"]:
            return i + 3, words[i + 2][2]
    for i, token in enumerate(tokens):
        if token == "order":
            j = i + 1
            while j < len(tokens) and tokens[j] in ("number", "is"):
                j += 1
            return j, words[j - 1][2]
    return None


def _digits_from(tokens: list[str]) -> str:
    out = ""
    for token in tokens:
        if token not in DIGITS:
            break
        out += str(DIGITS.index(token))
    return out


def transcribe(pcm: bytes) -> Transcript:
    """Transcribe 16 kHz mono PCM and find the order number in it (see module doc)."""
    words = _decode(_decoder("calls"), pcm)
    text = " ".join(w for w, _, _ in words)
    seconds = len(pcm) / 2 / RATE
    start = _order_start(words)
    if start is None:
        return Transcript(text, None, 0.0, seconds)
    index, frame = start
    first = _digits_from([w for w, _, _ in words[index:]])[:ORDER_DIGITS]
    offset = (frame + 1) * (RATE // FRAMES_PER_SECOND) * 2
    second = _digits_from([w for w, _, _ in _decode(_decoder("digits"), pcm[offset:])])
    if len(second) < ORDER_DIGITS:
        return Transcript(text, None, 0.0, seconds, first)
    number = second[:ORDER_DIGITS]
    agree = sum(a == b for a, b in zip(first, number, strict=False)) / ORDER_DIGITS
    return Transcript(text, f"ORD-{number}", agree, seconds, first)


def transcribe_file(path: Path) -> Transcript:
    return transcribe(load_pcm(path))
