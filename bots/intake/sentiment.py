"""How angry, urgent or escalation-prone a contact reads: for priority and routing only.

The score decides which case a runner takes first and where an escalated case sits in
the escalations workbook. It never decides whether a refund is paid or how much: the
policy (`bots.decide.policy`) never sees it, and the tests check that a furious
customer and a calm one get the same decision and amount.

- English (and text whose language was not detected): VADER (`vaderSentiment`), a
  lexicon and rule based scorer built for short social-media text; its compound score
  runs from -1 (furious) to +1. The words that drove it are the lexicon words found in
  the text with a negative valence.
- German, French and Spanish: VADER has no lexicon for them. A small fixed lexicon of
  anger and disappointment words per language (below, valences on VADER's -4..+4
  scale) is summed and normalised the way VADER normalises (x / sqrt(x^2 + 15)). It
  catches the words customers use when they are angry ("Frechheit", "arnaque",
  "vergüenza"), not irony or negation: a German "nicht schlecht" still counts as
  negative. Other languages (Italian, Dutch, Portuguese...) get no sentiment score:
  only the escalation and urgency words below, which are looked for in every text.
- Escalation words (lawyer, chargeback, bank dispute, regulator, press) and urgency
  words, in English, German, French and Spanish, whatever the detected language.

Priority = 2 for escalation words + 1 when angry (score <= ANGRY) + 1 for urgency
words: 0 (calm) to 4.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

ANGRY = -0.5  # a compound score at or below this counts as angry
THREAT_POINTS, ANGRY_POINTS, URGENT_POINTS = 2, 1, 1
TEXT_LIMIT = 5000  # characters scored: the opening of a long mail says how the customer feels

# Regex fragments, matched case-insensitively at a word start. German compounds
# ("Rechtsanwalt", "Rückbuchung") are matched inside words where marked with \w*.
THREATS: dict[str, tuple[str, ...]] = {
    "lawyer": (r"lawyers?", r"attorneys?", r"solicitors?", r"legal action", r"sue you",
               r"to court", r"\w*anw[aä]lt\w*", r"klage\w*", r"gericht\w*", r"avocats?",
               r"tribunal", r"proc[eè]s", r"abogad[oa]s?", r"demanda\w*"),
    "chargeback": (r"charge ?backs?", r"r[uü]ckbuchung\w*", r"r[eé]trofacturation",
                   r"contracargos?"),
    "bank dispute": (r"bank dispute", r"dispute (?:it |the charge |this )?with (?:my|the) bank",
                     r"dispute the (?:charge|payment|transaction)",
                     r"(?:bei|mit) (?:der|meiner) bank \w*", r"widerspruch \w* ?bank\w*",
                     r"contestation bancaire", r"opposition bancaire", r"litige bancaire",
                     r"(?:disputa|reclamaci[oó]n) (?:bancaria|al banco|con (?:el|mi) banco)"),
    "regulator": (r"regulators?", r"ombudsman", r"trading standards",
                  r"consumer protection", r"verbraucherzentrale", r"aufsichtsbeh[oö]rde",
                  r"dgccrf", r"r[eé]pression des fraudes", r"m[eé]diateur",
                  r"regulador\w*", r"oficina (?:de|del) consumidor"),
    "press": (r"press", r"journalists?", r"newspapers?", r"presse", r"zeitung\w*",
              r"journalistes?", r"prensa", r"periodistas?"),
}
URGENT = (r"urgent(?:ly)?", r"asap", r"immediately", r"right now",
          r"dringend\w*", r"sofort\w*", r"umgehend", r"heute noch", r"urgence",
          r"imm[eé]diatement", r"tout de suite", r"au plus vite", r"urgente",
          r"inmediatamente", r"cuanto antes", r"ya mismo")

# Anger and disappointment words (VADER's valence scale) for languages VADER lacks.
LEXICONS: dict[str, dict[str, float]] = {
    "de": {"unverschämt": -3.0, "frechheit": -3.0, "betrug": -3.5, "betrüger": -3.5,
           "skandal": -3.0, "skandalös": -3.0, "katastrophe": -3.0, "katastrophal": -3.0,
           "wütend": -3.0, "sauer": -2.0, "enttäuscht": -2.0, "enttäuschend": -2.0,
           "ärgerlich": -2.0, "inakzeptabel": -3.0, "lächerlich": -2.5, "schlecht": -2.0,
           "furchtbar": -3.0, "schrecklich": -3.0, "zumutung": -3.0, "kaputt": -1.5,
           "beschädigt": -1.5, "verärgert": -2.5, "abzocke": -3.5},
    "fr": {"scandaleux": -3.0, "scandale": -3.0, "inadmissible": -3.0, "inacceptable": -3.0,
           "honteux": -3.0, "honte": -2.5, "arnaque": -3.5, "escroquerie": -3.5,
           "escrocs": -3.5, "furieux": -3.0, "furieuse": -3.0, "déçu": -2.0, "déçue": -2.0,
           "décevant": -2.0, "nul": -2.0, "lamentable": -3.0, "catastrophe": -3.0,
           "catastrophique": -3.0, "ridicule": -2.5, "énervé": -2.5, "énervée": -2.5,
           "horrible": -3.0, "cassé": -1.5, "cassée": -1.5, "abîmé": -1.5, "abîmée": -1.5},
    "es": {"vergüenza": -2.5, "escandaloso": -3.0, "inaceptable": -3.0, "inadmisible": -3.0,
           "estafa": -3.5, "estafadores": -3.5, "timo": -3.0, "furioso": -3.0,
           "furiosa": -3.0, "enfadado": -2.5, "enfadada": -2.5, "decepcionado": -2.0,
           "decepcionada": -2.0, "decepcionante": -2.0, "fatal": -2.5, "horrible": -3.0,
           "desastre": -3.0, "ridículo": -2.5, "lamentable": -3.0, "roto": -1.5,
           "rota": -1.5, "dañado": -1.5, "dañada": -1.5, "indignado": -3.0,
           "indignada": -3.0},
}
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def _any_of(fragments: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)(?:" + "|".join(fragments) + r")(?!\w)", re.IGNORECASE)


_THREATS = {name: _any_of(fragments) for name, fragments in THREATS.items()}
_URGENT = _any_of(URGENT)


@dataclass(frozen=True)
class Triage:
    """A contact's sentiment and urgency, and the priority they give it (routing only)."""

    priority: int
    sentiment: float | None  # -1..+1; None: no scorer for this language
    method: str  # "VADER", "lexicon (de)" or "none (it)"
    negative_words: tuple[str, ...] = ()
    escalation_words: tuple[str, ...] = ()  # the kinds found: "lawyer", "chargeback"...
    urgency_words: tuple[str, ...] = ()

    @property
    def angry(self) -> bool:
        return self.sentiment is not None and self.sentiment <= ANGRY

    def describe(self) -> str:
        """One line for the audit trail and the workbook: the score and what drove it."""
        score = (f"sentiment {self.sentiment:+.2f} ({self.method})" if self.sentiment is not None
                 else f"no sentiment score ({self.method})")
        parts = [f"priority {self.priority}: {score}"]
        if self.negative_words:
            parts.append("negative words: " + ", ".join(self.negative_words))
        if self.escalation_words:
            parts.append("escalation words: " + ", ".join(self.escalation_words))
        if self.urgency_words:
            parts.append("urgency words: " + ", ".join(self.urgency_words))
        return "; ".join(parts)


@cache
def _vader() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def _unique(values: list[str], limit: int = 6) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        if v.lower() not in (o.lower() for o in out):
            out.append(v)
    return tuple(out[:limit])


def _vader_score(text: str) -> tuple[float, tuple[str, ...]]:
    analyzer = _vader()
    compound = float(analyzer.polarity_scores(text)["compound"])
    lexicon = analyzer.lexicon
    negatives = sorted((w for w in _WORD.findall(text) if lexicon.get(w.lower(), 0) < 0),
                       key=lambda w: lexicon[w.lower()])
    return compound, _unique(negatives)


def _lexicon_score(text: str, lexicon: dict[str, float]) -> tuple[float, tuple[str, ...]]:
    found = [w for w in _WORD.findall(text) if w.lower() in lexicon]
    total = sum(lexicon[w.lower()] for w in found)
    # Shouting makes it worse, as in VADER: each "!" (up to 4) adds 0.292 of intensity.
    if total < 0:
        total -= 0.292 * min(text.count("!"), 4)
    compound = total / math.sqrt(total * total + 15) if total else 0.0
    return round(compound, 4), _unique(sorted(found, key=lambda w: lexicon[w.lower()]))


def score(text: str, language: str | None) -> Triage:
    """The contact's triage: sentiment in its language, escalation and urgency words."""
    text = (text or "")[:TEXT_LIMIT]
    sentiment: float | None
    if language in LEXICONS:
        sentiment, negatives = _lexicon_score(text, LEXICONS[language])
        method = f"lexicon ({language})"
    elif language in (None, "en"):
        sentiment, negatives = _vader_score(text)
        method = "VADER"
    else:
        sentiment, negatives, method = None, (), f"none ({language})"
    threats = tuple(name for name, pattern in _THREATS.items() if pattern.search(text))
    urgent = _unique([m.group(0) for m in _URGENT.finditer(text)])
    priority = ((THREAT_POINTS if threats else 0)
                + (ANGRY_POINTS if sentiment is not None and sentiment <= ANGRY else 0)
                + (URGENT_POINTS if urgent else 0))
    return Triage(priority, sentiment, method, negatives if sentiment is not None
                  and sentiment < 0 else (), threats, urgent)
