"""The sandbox's seeded dataset: customers, orders, charges and earlier manual refunds.

Everything is generated from `(seed, today)` so that the demo and the tests see the same
data on every run, and every date is relative to `today` so there are always fresh and
stale orders. The scenarios the demo needs (an eligible order, one outside the refund
window, a final-sale one...) are forced in rather than hoped for, and `pick_scenarios`
hands them out by name.
"""

from __future__ import annotations

import random
import sqlite3
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from bots.models import money

SCENARIO_KEYS: tuple[str, ...] = (
    "eligible", "eligible2", "outside_window", "final_sale", "all_final_sale",
    "partly_refunded", "fully_refunded", "not_delivered", "duplicate", "high_value", "quantity",
)
STATUSES: tuple[str, ...] = ("processing", "shipped", "delivered", "cancelled")
CATEGORIES: tuple[str, ...] = ("apparel", "electronics", "home", "beauty", "gift-cards")
MANUAL_OPERATOR = "j.smith"
FIRST_ORDER_NO = 100001
FIRST_TXN_NO = 5000001
N_CUSTOMERS = 60
N_RANDOM_ORDERS = 190


# -- records --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Customer:
    customer_id: int
    name: str
    email: str
    phone: str
    card: str  # masked: the sandbox never holds a full card number


@dataclass(frozen=True)
class Item:
    sku: str
    name: str
    category: str
    unit_price: Decimal
    quantity: int
    final_sale: bool = False

    @property
    def total(self) -> Decimal:
        return money(self.unit_price * self.quantity)


@dataclass(frozen=True)
class Order:
    order_number: str
    customer_id: int
    order_date: date
    delivery_date: date | None
    status: str
    items: tuple[Item, ...]
    shipping_fee: Decimal
    currency: str
    payment_card: str

    @property
    def items_total(self) -> Decimal:
        return money(sum((i.total for i in self.items), Decimal(0)))

    @property
    def total(self) -> Decimal:
        return money(self.items_total + self.shipping_fee)


@dataclass(frozen=True)
class Charge:
    transaction_id: str
    order_number: str
    amount: Decimal
    currency: str
    card: str
    created_at: datetime  # naive UTC


@dataclass(frozen=True)
class Refund:
    refund_id: str
    transaction_id: str
    order_number: str
    amount: Decimal
    currency: str
    reason: str
    reference: str
    operator: str
    created_at: datetime  # naive UTC


@dataclass(frozen=True)
class Note:
    order_number: str
    author: str
    body: str
    created_at: datetime  # naive UTC


@dataclass
class Dataset:
    seed: int
    today: date
    customers: list[Customer]
    orders: list[Order]
    charges: list[Charge]
    refunds: list[Refund]
    notes: list[Note] = field(default_factory=list)
    scenarios: dict[str, str] = field(default_factory=dict)  # key -> order number

    def order(self, order_number: str) -> Order:
        return next(o for o in self.orders if o.order_number == order_number)

    def customer(self, customer_id: int) -> Customer:
        return next(c for c in self.customers if c.customer_id == customer_id)

    def charge_for(self, order_number: str) -> Charge | None:
        return next((c for c in self.charges if c.order_number == order_number), None)

    def refunds_for(self, order_number: str) -> list[Refund]:
        return [r for r in self.refunds if r.order_number == order_number]


# -- catalogue and people -------------------------------------------------------------------

@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    category: str
    price: Decimal


def _p(sku: str, name: str, category: str, price: str) -> Product:
    return Product(sku, name, category, Decimal(price))


CATALOG: tuple[Product, ...] = (
    _p("AP-1001", "Waterproof jacket", "apparel", "89.95"),
    _p("AP-1002", "Merino wool sweater", "apparel", "64.00"),
    _p("AP-1003", "Slim fit chinos", "apparel", "49.90"),
    _p("AP-1004", "Running sneakers", "apparel", "79.00"),
    _p("AP-1005", "Cotton T-shirt (3-pack)", "apparel", "24.99"),
    _p("AP-1006", "Leather belt", "apparel", "29.50"),
    _p("AP-1007", "Rain boots", "apparel", "54.00"),
    _p("AP-1008", "Wool scarf", "apparel", "19.95"),
    _p("EL-2001", "Wireless earbuds", "electronics", "129.00"),
    _p("EL-2002", "Bluetooth speaker", "electronics", "74.90"),
    _p("EL-2003", "USB-C charger 65W", "electronics", "39.99"),
    _p("EL-2004", "E-reader 6\"", "electronics", "119.00"),
    _p("EL-2005", "Smart watch", "electronics", "249.00"),
    _p("EL-2006", "55\" 4K television", "electronics", "899.00"),
    _p("EL-2007", "Noise-cancelling headphones", "electronics", "299.00"),
    _p("HO-3001", "Ceramic dinner set (12 pcs)", "home", "69.00"),
    _p("HO-3002", "Linen duvet cover", "home", "89.00"),
    _p("HO-3003", "Cast iron casserole", "home", "119.90"),
    _p("HO-3004", "Scented candle", "home", "18.50"),
    _p("HO-3005", "Bath towel set", "home", "45.00"),
    _p("HO-3006", "Espresso machine", "home", "349.00"),
    _p("BE-4001", "Vitamin C serum", "beauty", "32.00"),
    _p("BE-4002", "Hair dryer", "beauty", "59.90"),
    _p("BE-4003", "Eau de parfum 50ml", "beauty", "78.00"),
    _p("BE-4004", "Shaving kit", "beauty", "42.50"),
    _p("GC-5025", "Gift card 25", "gift-cards", "25.00"),
    _p("GC-5050", "Gift card 50", "gift-cards", "50.00"),
    _p("GC-5100", "Gift card 100", "gift-cards", "100.00"),
)

FIRST_NAMES = (
    "Anna", "Lukas", "Sophie", "Mateo", "Chloé", "Jonas", "Emma", "Liam", "Zoë", "Noah",
    "Léa", "Oliver", "Mia", "Hugo", "Isabel", "Finn", "Amélie", "Elias", "Clara", "Tomás",
    "Ingrid", "Marco", "Aoife", "Sven", "Nadia", "Pieter", "Eva", "Rafael", "Julia", "Kofi",
    "Hannah", "Luca", "Maja", "Theo", "Sara", "Jan", "Lucía", "Oscar", "Freya", "Daniel",
)
LAST_NAMES = (
    "Schmidt", "Dubois", "Rossi", "García", "Murphy", "Jansen", "Novak", "Müller", "Bernard",
    "Silva", "Kowalski", "Andersson", "Smith", "O'Brien", "Moreau", "Bianchi", "Fischer",
    "Martin", "Nielsen", "Costa", "Brennan", "Weber", "Laurent", "Romano", "van Dijk",
    "Öztürk", "Horvat", "Lindqvist", "Mensah", "Taylor",
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "post.example")
# '#' is a random digit; the last three are replaced by a per-customer suffix so that no two
# customers share the last 9 digits (the order system's phone search compares those).
PHONE_PATTERNS = (
    "+44 20 7946 0###", "020 7946 0###", "+33 6 ## ## ## ##", "06 ## ## ## ##",
    "+49 30 #######", "030 #######", "+353 1 555 ####", "+31 20 ### ####",
    "+1 202-555-0###", "+39 06 #### ####",
)
CARD_BRANDS = ("VISA", "VISA", "MASTERCARD", "AMEX")


def _ascii(text: str) -> str:
    """Email local parts are plain ASCII even when the name is not."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _phone(rng: random.Random, suffix: str) -> str:
    pattern = rng.choice(PHONE_PATTERNS)
    slots = [i for i, ch in enumerate(pattern) if ch == "#"]
    chars = list(pattern)
    for i in slots:
        chars[i] = str(rng.randint(0, 9))
    for i, digit in zip(slots[-3:], suffix, strict=True):
        chars[i] = digit
    return "".join(chars)


def _email(rng: random.Random, first: str, last: str, taken: set[str]) -> str:
    f, la = _ascii(first), _ascii(last)
    local = rng.choice((f"{f}.{la}", f"{f[0]}.{la}", f"{f}{la}{rng.randint(10, 99)}",
                        f"{f}_{la}"))
    domain = rng.choice(EMAIL_DOMAINS)
    email, n = f"{local}@{domain}", 2
    while email in taken:
        email, n = f"{local}{n}@{domain}", n + 1
    taken.add(email)
    return email


def _customers(rng: random.Random) -> list[Customer]:
    names = [(f, la) for f in FIRST_NAMES for la in LAST_NAMES]
    chosen = rng.sample(names, N_CUSTOMERS)
    suffixes = rng.sample(range(1000), N_CUSTOMERS)
    taken: set[str] = set()
    customers = []
    for i, ((first, last), sfx) in enumerate(zip(chosen, suffixes, strict=True), start=1):
        last4 = "4242" if i % 17 == 0 else f"{rng.randint(0, 9999):04d}"
        card = f"{rng.choice(CARD_BRANDS)} **** **** **** {last4}"
        customers.append(Customer(
            customer_id=i, name=f"{first} {last}", email=_email(rng, first, last, taken),
            phone=_phone(rng, f"{sfx:03d}"), card=card,
        ))
    return customers


# -- orders ---------------------------------------------------------------------------------

@dataclass
class _Draft:
    """An order before it has a number: numbers follow order dates, like the real system."""

    customer: Customer
    order_date: date
    delivery_date: date | None
    status: str
    items: tuple[Item, ...]
    shipping_fee: Decimal
    currency: str
    scenario: str | None = None


def _item(product: Product, quantity: int = 1, final_sale: bool | None = None) -> Item:
    flag = product.category == "gift-cards" if final_sale is None else final_sale
    return Item(product.sku, product.name, product.category, product.price, quantity, flag)


def _products(category: str | None = None, max_price: str | None = None,
              refundable: bool = True) -> list[Product]:
    return [p for p in CATALOG
            if (category is None or p.category == category)
            and (max_price is None or p.price <= Decimal(max_price))
            and (not refundable or p.category != "gift-cards")]


def _random_items(rng: random.Random) -> tuple[Item, ...]:
    products = rng.sample(CATALOG, rng.choice((1, 1, 1, 2, 2, 3)))
    items = []
    for p in products:
        quantity = rng.choices((1, 2, 3), weights=(80, 15, 5))[0]
        clearance = p.category != "gift-cards" and rng.random() < 0.07
        items.append(_item(p, quantity, True if clearance else None))
    return tuple(items)


def _random_shipping(rng: random.Random, items: tuple[Item, ...]) -> Decimal:
    if rng.random() < 0.05:
        return Decimal("12.90")  # express
    if sum(i.total for i in items) >= 75:
        return Decimal("0.00")
    return Decimal(rng.choice(("4.95", "5.90", "7.50")))


def _random_currency(rng: random.Random) -> str:
    roll = rng.random()
    return "GBP" if roll < 0.08 else "USD" if roll < 0.14 else "EUR"


def _random_draft(rng: random.Random, today: date, customer: Customer) -> _Draft:
    age = rng.randint(0, 180)
    ordered = today - timedelta(days=age)
    delivered: date | None = None
    if age <= 1:
        status = "processing"
    elif age <= 5 and rng.random() < 0.7:
        status = "shipped"
    elif age > 5 and rng.random() < 0.06:
        status = "cancelled"
    else:
        status = "delivered"
        delivered = min(today, ordered + timedelta(days=rng.randint(2, 7)))
    items = _random_items(rng)
    return _Draft(customer, ordered, delivered, status, items, _random_shipping(rng, items),
                  _random_currency(rng))


def _delivered(rng: random.Random, today: date, low: int, high: int) -> tuple[date, date]:
    """(order date, delivery date) for an order delivered `low`..`high` days ago."""
    delivered = today - timedelta(days=rng.randint(low, high))
    return delivered - timedelta(days=rng.randint(2, 5)), delivered


def _scenario_items(rng: random.Random, key: str) -> tuple[Item, ...]:
    """Items that make each scenario true whatever the seed (totals checked in tests)."""
    pick = rng.sample
    if key == "eligible":  # the demo customer writes about a jacket
        jacket = next(p for p in CATALOG if p.sku == "AP-1001")
        others = [p for p in _products("apparel", "79.00") if p is not jacket]
        return (_item(jacket, 1, False), *(_item(p, 1, False) for p in pick(others, 1)))
    if key in ("eligible2", "duplicate"):
        pool = _products("home", "120.00") + _products("beauty", "80.00")
        return tuple(_item(p, 1, False) for p in pick(pool, 2))
    if key == "quantity":  # the demo customer asks back two of the three candles
        candle = next(p for p in CATALOG if p.sku == "HO-3004")
        return (_item(candle, 3, False),)
    if key == "high_value":
        tv = next(p for p in CATALOG if p.sku == "EL-2006")
        extra = pick(_products("electronics", "130.00"), 1)
        return (_item(tv, 1, False), *(_item(p, 1, False) for p in extra))
    if key == "final_sale":
        normal, clearance = pick(_products("apparel"), 3)[:2], pick(_products("apparel"), 1)
        while clearance[0] in normal:
            clearance = pick(_products("apparel"), 1)
        return (*(_item(p, 1, False) for p in normal), _item(clearance[0], 1, True))
    if key == "all_final_sale":
        gift = pick(_products("gift-cards", refundable=False), 1)
        clearance = pick(_products("apparel", "60.00"), 1)
        return (_item(gift[0], 1, True), _item(clearance[0], 1, True))
    # outside_window, partly_refunded, fully_refunded, not_delivered: ordinary orders
    pool = _products("apparel", "90.00") + _products("home", "90.00")
    return tuple(_item(p, 1, False) for p in pick(pool, rng.choice((1, 2))))


SCENARIO_SHIPPING = {
    "eligible": "4.95", "eligible2": "0.00", "outside_window": "4.95", "final_sale": "4.95",
    "all_final_sale": "0.00", "partly_refunded": "5.90", "fully_refunded": "4.95",
    "not_delivered": "4.95", "duplicate": "5.90", "high_value": "0.00", "quantity": "4.95",
}


def _scenario_draft(rng: random.Random, today: date, key: str, customer: Customer) -> _Draft:
    delivered: date | None
    if key == "outside_window":
        ordered, delivered = _delivered(rng, today, 60, 80)
    elif key in ("eligible", "eligible2", "duplicate", "quantity"):
        ordered, delivered = _delivered(rng, today, 3, 10)
    else:
        ordered, delivered = _delivered(rng, today, 3, 9)
    status = "delivered"
    if key == "not_delivered":
        ordered, delivered, status = today - timedelta(days=rng.randint(2, 4)), None, "shipped"
    return _Draft(customer, ordered, delivered, status, _scenario_items(rng, key),
                  Decimal(SCENARIO_SHIPPING[key]), "EUR", scenario=key)


def _number_orders(rng: random.Random, drafts: list[_Draft]) -> list[tuple[_Draft, Order]]:
    """Sequential order numbers in order-date order, as the legacy system hands them out."""
    keyed = [(d.order_date, rng.random(), d) for d in drafts]
    keyed.sort(key=lambda k: (k[0], k[1]))
    numbered = []
    for n, (_, _, d) in enumerate(keyed, start=FIRST_ORDER_NO):
        numbered.append((d, Order(
            order_number=f"ORD-{n}", customer_id=d.customer.customer_id, order_date=d.order_date,
            delivery_date=d.delivery_date, status=d.status, items=d.items,
            shipping_fee=money(d.shipping_fee), currency=d.currency,
            payment_card=d.customer.card,
        )))
    return numbered


def _at(day: date, rng: random.Random, first_hour: int = 8, last_hour: int = 21) -> datetime:
    return datetime.combine(day, time(rng.randint(first_hour, last_hour), rng.randint(0, 59),
                                      rng.randint(0, 59)))


def _charges(rng: random.Random, orders: list[Order]) -> list[Charge]:
    charges = []
    for n, order in enumerate((o for o in orders if o.status != "cancelled"), start=FIRST_TXN_NO):
        charges.append(Charge(f"TX-{n}", order.order_number, order.total, order.currency,
                              order.payment_card, _at(order.order_date, rng)))
    return charges


def _manual_refunds(rng: random.Random, ds: Dataset) -> list[Refund]:
    """Refunds an operator keyed in by hand before the bots existed: partial and full ones."""
    scenario_orders = set(ds.scenarios.values())
    plans: list[tuple[Order, Decimal, str, str]] = []
    partly = ds.order(ds.scenarios["partly_refunded"])
    plans.append((partly, money(min(Decimal("15.00"), partly.total / 4)), "other",
                  "manual goodwill"))
    fully = ds.order(ds.scenarios["fully_refunded"])
    plans.append((fully, fully.total, "customer_request", "manual goodwill - full refund"))
    candidates = [o for o in ds.orders
                  if o.status == "delivered" and o.order_number not in scenario_orders
                  and o.delivery_date is not None
                  and o.delivery_date <= ds.today - timedelta(days=5)]
    for i, order in enumerate(rng.sample(candidates, 4)):
        if i == 0:
            plans.append((order, order.total, "damaged", "manual goodwill"))
        else:
            share = Decimal(rng.choice((10, 20, 25))) / 100
            reason = rng.choice(("other", "damaged", "customer_request"))
            reference = rng.choice(("manual goodwill", "manual goodwill - late parcel",
                                    "phone: partial credit"))
            plans.append((order, money(order.total * share), reason, reference))
    drafts = []
    for order, amount, reason, reference in plans:
        charge = ds.charge_for(order.order_number)
        assert charge is not None and order.delivery_date is not None
        day = min(ds.today - timedelta(days=1),
                  order.delivery_date + timedelta(days=rng.randint(1, 3)))
        drafts.append((_at(day, rng, 9, 17), charge, order, amount, reason, reference))
    drafts.sort(key=lambda d: d[0])
    return [Refund(f"RF-{n:06d}", charge.transaction_id, order.order_number, amount,
                   order.currency, reason, reference, MANUAL_OPERATOR, created)
            for n, (created, charge, order, amount, reason, reference)
            in enumerate(drafts, start=1)]


def _notes(rng: random.Random, ds: Dataset) -> list[Note]:
    notes = [Note(r.order_number, MANUAL_OPERATOR,
                  f"Manual refund {r.amount:.2f} {r.currency} issued in the payment portal "
                  f"({r.refund_id}).", r.created_at + timedelta(minutes=3))
             for r in ds.refunds]
    remarks = ("Customer called about delivery time.", "Address corrected on customer request.",
               "Parcel left with neighbour, customer informed.", "Gift wrap requested.")
    for order in rng.sample(ds.orders, 8):
        notes.append(Note(order.order_number, rng.choice(("j.smith", "m.keller", "a.rossi")),
                          rng.choice(remarks), _at(order.order_date, rng)))
    return sorted(notes, key=lambda n: n.created_at)


def build_dataset(seed: int = 7, today: date | None = None) -> Dataset:
    """The whole sandbox world for one seed, dated relative to `today`."""
    today = today or date.today()
    rng = random.Random(seed)
    customers = _customers(rng)
    scenario_customers = rng.sample(customers, len(SCENARIO_KEYS))
    drafts = [_scenario_draft(rng, today, key, c)
              for key, c in zip(SCENARIO_KEYS, scenario_customers, strict=True)]
    drafts += [_random_draft(rng, today, rng.choice(customers)) for _ in range(N_RANDOM_ORDERS)]
    numbered = _number_orders(rng, drafts)
    orders = [o for _, o in numbered]
    ds = Dataset(seed=seed, today=today, customers=customers, orders=orders,
                 charges=_charges(rng, orders), refunds=[],
                 scenarios={d.scenario: o.order_number for d, o in numbered if d.scenario})
    ds.scenarios = {key: ds.scenarios[key] for key in SCENARIO_KEYS}
    ds.refunds = _manual_refunds(rng, ds)
    ds.notes = _notes(rng, ds)
    return ds


def pick_scenarios(ds: Dataset) -> dict[str, Order]:
    """One distinct order per demo scenario (see SCENARIO_KEYS), by name."""
    return {key: ds.order(number) for key, number in ds.scenarios.items()}


# -- databases ------------------------------------------------------------------------------

ORDERS_SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT NOT NULL);
CREATE TABLE orders (
    order_number TEXT PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
    order_date TEXT NOT NULL, delivery_date TEXT, status TEXT NOT NULL,
    currency TEXT NOT NULL, shipping_fee TEXT NOT NULL, total TEXT NOT NULL,
    payment_card TEXT NOT NULL);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE TABLE items (
    id INTEGER PRIMARY KEY, order_number TEXT NOT NULL REFERENCES orders(order_number),
    line_no INTEGER NOT NULL, sku TEXT NOT NULL, name TEXT NOT NULL, category TEXT NOT NULL,
    unit_price TEXT NOT NULL, quantity INTEGER NOT NULL, final_sale INTEGER NOT NULL);
CREATE INDEX items_order ON items(order_number);
CREATE TABLE notes (
    id INTEGER PRIMARY KEY, order_number TEXT NOT NULL REFERENCES orders(order_number),
    author TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX notes_order ON notes(order_number);
"""

PAYMENTS_SCHEMA = """
CREATE TABLE transactions (
    transaction_id TEXT PRIMARY KEY, order_number TEXT NOT NULL, amount TEXT NOT NULL,
    currency TEXT NOT NULL, card TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX transactions_order ON transactions(order_number);
CREATE TABLE refunds (
    id INTEGER PRIMARY KEY, refund_id TEXT NOT NULL UNIQUE,
    transaction_id TEXT NOT NULL REFERENCES transactions(transaction_id),
    order_number TEXT NOT NULL, amount TEXT NOT NULL, currency TEXT NOT NULL,
    reason TEXT NOT NULL, reference TEXT NOT NULL, operator TEXT NOT NULL,
    created_at TEXT NOT NULL);
CREATE INDEX refunds_transaction ON refunds(transaction_id);
"""

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def _fresh_db(path: Path, schema: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
                  path.with_name(path.name + "-journal")):
        stale.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")  # readers (tests, humans) never block a refund
    db.executescript(schema)
    return db


def _cents(amount: Decimal) -> str:
    """Money as text with two decimals: never a float, exact when read back as Decimal."""
    return f"{money(amount):.2f}"


def _write_orders(ds: Dataset, path: Path) -> None:
    db = _fresh_db(path, ORDERS_SCHEMA)
    with db:
        db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)",
                       [(c.customer_id, c.name, c.email, c.phone) for c in ds.customers])
        db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (o.order_number, o.customer_id, o.order_date.isoformat(),
             o.delivery_date.isoformat() if o.delivery_date else None, o.status, o.currency,
             _cents(o.shipping_fee), _cents(o.total), o.payment_card) for o in ds.orders])
        db.executemany(
            "INSERT INTO items (order_number, line_no, sku, name, category, unit_price, quantity,"
            " final_sale) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(o.order_number, n, i.sku, i.name, i.category, _cents(i.unit_price), i.quantity,
              int(i.final_sale)) for o in ds.orders for n, i in enumerate(o.items, start=1)])
        db.executemany(
            "INSERT INTO notes (order_number, author, body, created_at) VALUES (?, ?, ?, ?)",
            [(n.order_number, n.author, n.body, n.created_at.strftime(DATETIME_FORMAT))
             for n in ds.notes])
    db.close()


def _write_payments(ds: Dataset, path: Path) -> None:
    db = _fresh_db(path, PAYMENTS_SCHEMA)
    with db:
        db.executemany("INSERT INTO transactions VALUES (?, ?, ?, ?, ?, ?)", [
            (c.transaction_id, c.order_number, _cents(c.amount), c.currency, c.card,
             c.created_at.strftime(DATETIME_FORMAT)) for c in ds.charges])
        db.executemany(
            "INSERT INTO refunds (id, refund_id, transaction_id, order_number, amount, currency,"
            " reason, reference, operator, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(int(r.refund_id[3:]), r.refund_id, r.transaction_id, r.order_number,
              _cents(r.amount), r.currency, r.reason, r.reference, r.operator,
              r.created_at.strftime(DATETIME_FORMAT)) for r in ds.refunds])
    db.close()


def write_databases(ds: Dataset, orders_db: Path, payments_db: Path) -> None:
    """Create both apps' SQLite files from scratch (any existing file is replaced)."""
    _write_orders(ds, Path(orders_db))
    _write_payments(ds, Path(payments_db))
