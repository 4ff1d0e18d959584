"""The selectors schema: strict, with errors that name file, key and problem; formats that
never guess; every key of the schema read by the page objects."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from paths import ROOT

from bots.legacy.base import Found, Reading
from bots.legacy.selectors import (
    AmountFormat,
    Formats,
    OrdersSelectors,
    PaymentsSelectors,
    Sel,
    SelectorFileError,
    load_orders,
    load_payments,
)

SHIPPED = [ROOT / "selectors", ROOT / "selectors" / "examples" / "oldschool"]


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_files_are_valid(folder: Path) -> None:
    load_orders(folder / "orders.yaml")
    load_payments(folder / "payments.yaml")


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "orders.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _orders_data() -> dict:
    return yaml.safe_load((ROOT / "selectors" / "orders.yaml").read_text(encoding="utf-8"))


def test_a_missing_key_is_named_with_the_file(tmp_path: Path) -> None:
    data = _orders_data()
    del data["order"]["status"]
    path = _write(tmp_path, data)
    with pytest.raises(SelectorFileError, match=re.escape(f"{path}: order.status: Field required")):
        load_orders(path)


def test_an_unknown_key_is_an_error_not_ignored(tmp_path: Path) -> None:
    data = _orders_data()
    data["search"]["confirm_text"] = "never read"
    with pytest.raises(SelectorFileError, match=r"search\.confirm_text: Extra inputs"):
        load_orders(_write(tmp_path, data))


def test_a_pattern_needs_the_value_group(tmp_path: Path) -> None:
    data = _orders_data()
    data["order"]["status"] = {"css": "#s", "pattern": "Status: (.*)"}
    with pytest.raises(SelectorFileError, match=r"order\.status.*\(\?P<value>"):
        load_orders(_write(tmp_path, data))


def test_not_yaml_and_not_a_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.yaml"
    bad.write_text("order: [unclosed", encoding="utf-8")
    with pytest.raises(SelectorFileError, match="not valid YAML"):
        load_orders(bad)
    with pytest.raises(SelectorFileError, match="cannot read"):
        load_orders(tmp_path / "missing.yaml")


def test_selector_forms() -> None:
    assert Sel.model_validate("#a").candidates == ("#a",)
    assert Sel.model_validate(["#a", "#b"]).candidates == ("#a", "#b")
    s = Sel.model_validate({"css": "img.status", "attr": "title",
                            "map": {"Versandt": "shipped"}})
    assert s.extract("Versandt") == "shipped" and s.extract("versandt") == "shipped"
    assert s.extract("Storniert") is None  # unmapped is unreadable, never passed through
    n = Sel.model_validate({"css": ".flash", "pattern": r"Refund (?P<value>RF-\d+) of"})
    assert n.extract("Refund RF-000007 of 89.95 EUR has been processed.") == "RF-000007"
    assert n.extract("Something else") is None
    assert Sel.model_validate({"css": "#n", "pattern": "#(?P<value>.+)"}).extract("#ORD-1") \
        == "ORD-1"


@pytest.mark.parametrize(("fmt", "text", "value"), [
    ({}, "1,234.50", "1234.50"),
    ({}, "12.5", "12.50"),
    ({}, "-3.00", "-3.00"),
    ({"thousands": ".", "decimal": ",", "symbol": "€"}, "1.234,56 €", "1234.56"),
    ({"thousands": ".", "decimal": ",", "symbol": "€"}, "89,95\u00a0€", "89.95"),
    ({"thousands": "", "decimal": "."}, "1234.50", "1234.50"),
    ({"symbol": "EUR", "symbol_position": "prefix"}, "EUR 12.50", "12.50"),
])
def test_amounts_in_each_apps_format(fmt: dict, text: str, value: str) -> None:
    assert AmountFormat(**fmt).parse(text) == Decimal(value)


@pytest.mark.parametrize(("fmt", "text"), [
    ({}, "1.234,56"),  # German text read with English separators is not 1.23
    ({}, ""),
    ({}, "abc"),
    ({}, "1,23.45"),
    ({"thousands": ".", "decimal": ","}, "1,234.56"),
    ({"thousands": "", "decimal": "."}, "1,234.50"),
    ({}, "12.345"),
])
def test_amounts_in_another_format_are_unreadable(fmt: dict, text: str) -> None:
    assert AmountFormat(**fmt).parse(text) is None


def test_amount_input_format() -> None:
    assert AmountFormat(thousands=".", decimal=",").format_input(Decimal("1234.5")) == "1234,50"
    assert AmountFormat().format_input(Decimal("89.95")) == "89.95"


def test_dates_and_no_date_words() -> None:
    f = Formats(date="%d.%m.%Y", no_date=("k. A.", "–"))
    assert f.parse_date("31.01.2025") == date(2025, 1, 31)
    assert f.parse_date("k. A.") is None and f.parse_date("–") is None
    with pytest.raises(ValueError):
        f.parse_date("")  # empty is not a 'no date' word for this app
    with pytest.raises(ValueError):
        f.parse_date("2025-01-31")


def _reading(sel: Sel, matched: int, raw: str | None, formats: Formats | None = None) -> Reading:
    return Reading("order system", "http://x/o/1", {"v": Found("order.v", sel, matched, raw)},
                   formats or Formats())


def test_absent_is_unknown_never_false_or_empty() -> None:
    from bots.errors import SelectorMissing, UnreadableValue

    sel = Sel.model_validate("td.final-sale")
    with pytest.raises(SelectorMissing, match=r"order\.v \(td\.final-sale\) not found"):
        _reading(sel, -1, None).flag("v")
    with pytest.raises(UnreadableValue, match="neither a yes nor a no"):
        _reading(sel, 0, "maybe").flag("v")
    with pytest.raises(UnreadableValue, match="is empty"):
        _reading(sel, 0, "  ").text("v")
    with pytest.raises(UnreadableValue, match="not an amount"):
        _reading(sel, 0, "1.234,56 €").amount("v")
    with pytest.raises(UnreadableValue, match="neither a date"):
        _reading(sel, 0, "soon").date("v")
    assert _reading(sel, 0, "").date("v") is None  # the default app shows nothing
    assert _reading(sel, 0, "Ja", Formats(yes=("Ja",), no=("Nein",))).flag("v") is True
    icon = Sel.model_validate({"css": "img", "attr": "title", "map": {"Versandt": "shipped"}})
    with pytest.raises(UnreadableValue, match="pattern/map cannot read"):
        _reading(icon, 0, "Unbekannt").text("v")


def test_fallbacks_report_which_matched() -> None:
    sel = Sel.model_validate(["#status", "td.status"])
    found = Found("order.status", sel, 1, "shipped")
    assert found.state == "found" and sel.candidates[found.matched] == "td.status"


def _schema_keys(model: type) -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        keys.add(name)
        for arg in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(arg, type) and hasattr(arg, "model_fields") and arg is not Sel:
                keys |= _schema_keys(arg)
    return keys


@pytest.mark.parametrize("model", [OrdersSelectors, PaymentsSelectors])
def test_every_schema_key_is_read_by_the_code(model: type) -> None:
    """A key the code never reads is a key a deployment would tune in vain."""
    code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "bots" / "legacy").glob("*.py")
                     if p.name != "selectors.py")
    schema = (ROOT / "bots" / "legacy" / "selectors.py").read_text(encoding="utf-8")
    unread = [k for k in sorted(_schema_keys(model))
              if not re.search(rf"[.\"']{k}\b", code) and not re.search(rf"self\.{k}\b", schema)]
    assert not unread, f"never read: {unread}"
