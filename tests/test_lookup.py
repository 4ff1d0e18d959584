"""The order and its charge are looked up at once (issue 14, speed), yet decided in order:
the order's outcome first, the charge's (error included) only when it is needed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bots.errors import SystemException, UnknownPage
from bots.legacy.session import find_order_and_charge


class _App:
    def __init__(self, answer: Any, log: list[str], name: str) -> None:
        self.answer, self.log, self.name = answer, log, name

    async def _answer(self) -> Any:
        self.log.append(f"{self.name} start")
        await asyncio.sleep(0)  # both are under way before either ends
        self.log.append(f"{self.name} end")
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    async def find_order(self, order_number: str) -> Any:
        return await self._answer()

    async def find_charge(self, order_number: str) -> Any:
        return await self._answer()


def _lookup(order: Any, charge: Any) -> tuple[Any, Any, list[str]]:
    log: list[str] = []
    got = asyncio.run(find_order_and_charge(_App(order, log, "order"),  # type: ignore[arg-type]
                                            _App(charge, log, "charge"),  # type: ignore[arg-type]
                                            "ORD-1"))
    return (*got, log)


def test_both_run_at_once_and_answer_each() -> None:
    order, charge, log = _lookup("the order", "the charge")
    assert order == "the order" and charge.get() == "the charge"
    assert log[:2] == ["order start", "charge start"]


def test_the_orders_error_comes_first_even_when_the_charge_also_failed() -> None:
    with pytest.raises(UnknownPage, match="order page"):
        _lookup(UnknownPage("order page"), SystemException("charge page"))


def test_an_order_not_found_is_not_hidden_by_the_charges_error() -> None:
    """A missing order is a business answer; the charge's error waits until it is needed."""
    order, charge, _ = _lookup(None, UnknownPage("charge page"))
    assert order is None
    with pytest.raises(UnknownPage, match="charge page"):
        charge.get()
