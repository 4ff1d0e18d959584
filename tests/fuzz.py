"""Fuzzed customer text shared by the tests that compare two ways of extracting."""

from __future__ import annotations

import random


def fuzz_texts(n: int, seed: int) -> list[str]:
    """Messages made of the tokens extraction cares about, in random order and case."""
    tokens = ["refund", "Refund", "AMOUNT:", "Betrag", "€", "£", "$", "US$", "A$", "R$", "EUR",
              "usd", "kr", "Fr.", "zł", "euros", "ORD-123456", "ord 654321", "order no. 222333",
              "Bestellung Nr. 123456", "12", "49.90", "1.234,50", "12,-", "2026-11-28",
              "28.11.2026", "10:30", "**** 1234", "+49 30 1234567", "0049 30 1234567",
              "030 123 4567", "tel:", "phone", "téléfono", "4111 1111 1111 1111",
              "4111111111111111",
              "DE89 3704 0044 0532 0130 00", "password: x", "paſsword: y", "cvv 123",
              "PIN 1234", "cıd 123", "İban", "ſ", "ı", "K", "٤١١١", "１２３",
              "ımporte", "erſtattung", "İmporte 12", "zł 12", "12 zł", "12,- €", "€ 7",
              "beſtellung 123456", "broken", "damaged",
              "never arrived", "wrong size", "charged twice", "too late", "changed my mind",
              "don't need it", "kaputt", "endommagé", "no funciona", " ", ",", ".", "\n", "-"]
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        size = rng.randint(1, 12) if rng.random() < 0.8 else rng.randint(30, 60)  # long: gates
        text = rng.choice([" ", "", ", ", "\n"]).join(rng.choice(tokens) for _ in range(size))
        texts.append(text.upper() if rng.random() < 0.15 else text)
    return texts
