"""Forecast: the next 7 and 28 days of refund requests and refunded amounts, with its error.

Explainable on purpose: two models a person can check by hand, per daily series (all
requests, each channel, each reason; the same for the amounts refunded):

- seasonal naive: each day as the same weekday last week;
- Holt-Winters exponential smoothing (statsmodels) with an additive weekly season.

Both are backtested on the last 14 days of the history (fitted on what came before;
fewer when the history is short); the
one with the smaller mean absolute error forecasts, and its error is shown beside it.
Too short a history (under 3 weeks) uses the seasonal naive model alone.

The spike check fits on the history before the last 7 complete days and compares them
with what it predicted: a series far above (`alerts.spike_ratio`, at least
`alerts.spike_min` requests more) is the early warning of a defect or a fraud ring.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import pandas as pd
from sqlalchemy import select

from bots.queue import Case, Queue, RequestRow

HORIZON = 28
BACKTEST = 14
MIN_HW_DAYS = 21  # three weeks: enough to estimate a weekly season
HISTORY_DAYS = 365
MIN_VOLUME = 14  # a series with fewer events in its history is not forecast on its own
PAID = ("refunded", "partial")


@dataclass(frozen=True)
class Spike:
    series: str
    actual: float
    expected: float

    @property
    def ratio(self) -> float:
        return self.actual / self.expected if self.expected else float("inf")


@dataclass
class SeriesForecast:
    name: str  # "requests: all", "requests: channel email", "amount: reason damaged"
    kind: str  # "requests" or "amount"
    history: pd.Series
    model: str
    path: pd.Series  # the next HORIZON days
    mae: float | None  # backtest mean absolute error per day
    mape: float | None  # backtest mean absolute percentage error (days with activity)
    week_actual: float = 0.0  # the last 7 complete days
    week_expected: float | None = None  # what the history before them predicted

    @property
    def next7(self) -> float:
        return float(self.path.iloc[:7].sum())

    @property
    def next28(self) -> float:
        return float(self.path.iloc[:28].sum())

    @property
    def last28(self) -> float:
        return float(self.history.iloc[-28:].sum())


@dataclass
class ForecastResult:
    today: date
    days: int  # days of history used
    total: SeriesForecast | None = None
    amount_total: SeriesForecast | None = None
    series: list[SeriesForecast] = field(default_factory=list)

    def spikes(self, ratio: float, minimum: int) -> list[Spike]:
        out = []
        for s in [x for x in (self.total, *self.series) if x is not None]:
            if s.kind != "requests" or s.week_expected is None:
                continue
            if s.week_actual > ratio * max(s.week_expected, 1.0) and \
                    s.week_actual - s.week_expected >= minimum:
                out.append(Spike(s.name.removeprefix("requests: "), s.week_actual,
                                 s.week_expected))
        return out


def forecast_all(queue: Queue, today: date | None = None) -> ForecastResult:
    """Every series of the queue's history, forecast.

    Daily series change once a day: the result is kept for CACHE_SECONDS per queue and day
    (fitting some thirty series takes seconds on a busy machine).
    """
    today = today or date.today()
    key = (queue.url, today)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
    result = compute(queue, today)
    with _LOCK:
        _CACHE[key] = (time.monotonic(), result)
    return result


CACHE_SECONDS = 3600.0
_CACHE: dict[tuple[str, date], tuple[float, ForecastResult]] = {}
_LOCK = threading.Lock()


def compute(queue: Queue, today: date) -> ForecastResult:
    requests, paid = _frames(queue, today)
    days = (today - requests["day"].min()).days if len(requests) else 0
    result = ForecastResult(today=today, days=days)
    if requests.empty:
        return result
    index = pd.date_range(end=pd.Timestamp(today - timedelta(days=1)), periods=max(days, 1),
                          freq="D")
    result.total = forecast_series("requests: all", "requests",
                                   _daily(requests, index, None, None), spike_check=True)
    result.amount_total = forecast_series("amount: all", "amount",
                                          _daily(paid, index, None, None, "amount"))
    for column in ("channel", "reason"):
        for value in sorted(requests[column].dropna().unique()):
            y = _daily(requests, index, column, value)
            if y.sum() >= MIN_VOLUME:
                result.series.append(forecast_series(f"requests: {column} {value}",
                                                     "requests", y, spike_check=True))
        for value in sorted(paid[column].dropna().unique()) if len(paid) else []:
            y = _daily(paid, index, column, value, "amount")
            if (paid[column] == value).sum() >= MIN_VOLUME:
                result.series.append(forecast_series(f"amount: {column} {value}", "amount", y))
    return result


def _frames(queue: Queue, today: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per request (day, channel, reason) and per paid case (day, ..., amount)."""
    since = today - timedelta(days=HISTORY_DAYS)
    with queue.session() as s:
        reqs = s.execute(select(RequestRow.received_at, RequestRow.channel,
                                RequestRow.reason_category, RequestRow.case_id)).all()
        cases = s.execute(select(Case.id, Case.approved_amount)
                          .where(Case.outcome.in_(PAID))).all()
    requests = pd.DataFrame([(r.received_at.date(), r.channel, r.reason_category, r.case_id)
                             for r in reqs if since <= r.received_at.date() < today],
                            columns=["day", "channel", "reason", "case_id"])
    amounts = {cid: float(a or Decimal(0)) for cid, a in cases}
    first = requests.sort_values("day").drop_duplicates("case_id")
    paid = first[first["case_id"].isin(amounts.keys())].copy()
    paid["amount"] = paid["case_id"].map(amounts)
    return requests, paid


def _daily(frame: pd.DataFrame, index: pd.DatetimeIndex, column: str | None,
           value: object, measure: str | None = None) -> pd.Series:
    rows = frame if column is None else frame[frame[column] == value]
    if rows.empty:
        return pd.Series(0.0, index=index)
    days = pd.to_datetime(rows["day"])
    y = (rows.groupby(days)[measure].sum() if measure else days.value_counts()).astype(float)
    return y.reindex(index, fill_value=0.0)


def forecast_series(name: str, kind: str, y: pd.Series,
                    spike_check: bool = False) -> SeriesForecast:
    """Backtest both models, forecast with the better one, and (asked) check the last week."""
    model, mae, mape = _choose(y)
    path = _predict(model, y, HORIZON)
    fc = SeriesForecast(name, kind, y, _LABELS[model], path, mae, mape)
    if spike_check and len(y) >= 14:
        fc.week_actual = float(y.iloc[-7:].sum())
        try:
            fc.week_expected = float(_predict(model, y.iloc[:-7], 7).sum())
        except Exception:  # noqa: BLE001 - the shorter history does not fit: the naive one
            fc.week_expected = float(_predict("naive", y.iloc[:-7], 7).sum())
    return fc


_LABELS = {"naive": "seasonal naive (same weekday last week)",
           "hw": "Holt-Winters, additive weekly season (statsmodels)",
           "mean": "daily mean (under a week of history)"}


def _choose(y: pd.Series) -> tuple[str, float | None, float | None]:
    if len(y) < 7:
        return "mean", None, None
    if len(y) < MIN_HW_DAYS:
        return "naive", *_backtest("naive", y)
    scores = {m: _backtest(m, y) for m in ("naive", "hw")}
    best = min(scores, key=lambda m: _or_inf(scores[m][0]))
    return best, *scores[best]


def _or_inf(value: float | None) -> float:
    return float("inf") if value is None else value


def _backtest(model: str, y: pd.Series) -> tuple[float | None, float | None]:
    window = min(BACKTEST, len(y) - 7)  # at least a week to learn from
    if window < 7:
        return None, None
    train, test = y.iloc[:-window], y.iloc[-window:]
    try:
        predicted = _predict(model, train, window).to_numpy()
    except Exception:  # noqa: BLE001 - a model that cannot fit this series: not chosen
        return None, None
    errors = abs(test.to_numpy() - predicted)
    active = test.to_numpy() > 0
    mape = float((errors[active] / test.to_numpy()[active]).mean() * 100) if active.any() \
        else None
    return float(errors.mean()), mape


def _predict(model: str, y: pd.Series, horizon: int) -> pd.Series:
    index = pd.date_range(start=y.index[-1] + pd.Timedelta(days=1), periods=horizon, freq="D")
    if model == "mean" or len(y) < 7:
        return pd.Series(float(y.mean()) if len(y) else 0.0, index=index)
    if model == "naive":
        week = y.iloc[-7:].to_numpy()
        return pd.Series([float(week[i % 7]) for i in range(horizon)], index=index)
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on flat or sparse series
        # heuristic start values (a fraction of the time of fitting them too), then the
        # level and season smoothing fitted by statsmodels
        fit = ExponentialSmoothing(y.to_numpy(), trend=None, seasonal="add",
                                   seasonal_periods=7, initialization_method="heuristic").fit()
        values = fit.forecast(horizon)
    return pd.Series([max(0.0, float(v)) for v in values], index=index)
