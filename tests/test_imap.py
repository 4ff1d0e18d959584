"""The shared-mailbox intake against a real Dovecot (IMAPS, STARTTLS, plain IMAP)."""

from __future__ import annotations

import importlib.util
import itertools
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dovecot as dovecot_helper  # tests/ is on sys.path (`tests` itself is taken: see below)
import pytest
from dovecot import Dovecot

from bots.intake import imap
from bots.intake.imap import MailboxConfig, MailboxError, read_mailbox
from bots.models import Quarantined, RefundRequest

# Not `tests.dovecot`: rpaframework's dependency O365 installs a top-level `tests` package
# into site-packages, which shadows this folder as a package name.

SECRET = "TEST_IMAP_PASSWORD"
_users = itertools.count(1)


@pytest.fixture(scope="module")
def server() -> Iterator[Dovecot]:
    with Dovecot() as running:
        yield running


@pytest.fixture
def mailbox(server: Dovecot, monkeypatch: pytest.MonkeyPatch) -> Dovecot:
    """A fresh, empty mailbox user on the shared server, its password in the secret env var."""
    box = server.add_user(f"shared{next(_users)}", f"pw-{next(_users)}-Xy!")
    monkeypatch.setenv(f"REFUND_BOTS_{SECRET}", box.password)
    return box


def config(box: Dovecot, **overrides: Any) -> MailboxConfig:
    """IMAPS with the test CA: the production path."""
    fields: dict[str, Any] = {"host": box.host, "port": box.ssl_port, "user": box.user,
                              "password_secret": SECRET, "ca_file": box.cafile}
    return MailboxConfig(**{**fields, **overrides})


def mail(n: int, body: str | None = None, *, html: str | None = None,
         msgid: str | None = None, sender: str = "ada@example.com") -> bytes:
    head = (f"From: Ada Lovelace <{sender}>\r\nTo: refunds@shop.example\r\n"
            f"Subject: Refund for order ORD-10000{n}\r\n"
            f"Date: Fri, 27 Nov 2026 10:0{n}:00 +0000\r\n"
            f"Message-ID: <{msgid or f'm{n}@example.com'}>\r\nMIME-Version: 1.0\r\n")
    if html is not None:
        return (head + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html).encode()
    text = body or f"Hello, the kettle from order ORD-10000{n} is broken. Please refund 25.00 EUR."
    return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n").encode()


def uids_flags(box: Dovecot, folder: str = "INBOX") -> list[tuple[str, ...]]:
    return [flags for _, flags in box.list(folder)]


# -- reading and filing -----------------------------------------------------------------------


def test_unseen_messages_become_requests_and_are_moved(mailbox: Dovecot) -> None:
    mailbox.append(mail(1))
    mailbox.append(mail(2))
    mailbox.append(mail(3), flags="\\Seen")  # a human already read it: not ours

    items = list(read_mailbox(config(mailbox)))

    assert [type(i) for i in items] == [RefundRequest, RefundRequest]
    first = items[0]
    assert isinstance(first, RefundRequest)
    assert (first.channel, first.source_id, first.order_number) == ("email", "m1@example.com",
                                                                    "ORD-100001")
    assert first.customer_email == "ada@example.com"
    assert first.source_ref == f"imap://{mailbox.user}@{mailbox.host}/INBOX;uid=1"
    assert items[1].source_id == "m2@example.com"
    assert [u for u, _ in mailbox.list("INBOX")] == [3]
    moved = mailbox.list("Processed")
    assert len(moved) == 2 and all("\\Seen" in flags for _, flags in moved)


def test_second_run_yields_nothing_and_new_mail_is_picked_up(mailbox: Dovecot) -> None:
    cfg = config(mailbox)
    mailbox.append(mail(1))
    assert len(list(read_mailbox(cfg))) == 1
    assert list(read_mailbox(cfg)) == []

    mailbox.append(mail(2))
    items = list(read_mailbox(cfg))
    assert [i.source_id for i in items] == ["m2@example.com"]
    assert len(mailbox.list("Processed")) == 2


def test_without_processed_folder_handled_mail_is_only_flagged_seen(mailbox: Dovecot) -> None:
    mailbox.append(mail(1))
    mailbox.append(mail(2))
    cfg = config(mailbox, processed_folder=None)

    assert len(list(read_mailbox(cfg))) == 2
    assert uids_flags(mailbox) and all("\\Seen" in f for f in uids_flags(mailbox))
    assert "Processed" not in mailbox.folders()
    assert list(read_mailbox(cfg)) == []


def test_a_message_is_filed_only_after_the_consumer_continued(mailbox: Dovecot) -> None:
    """A crash between fetch and filing leaves the message unseen for the next run."""
    mailbox.append(mail(1))
    mailbox.append(mail(2))
    cfg = config(mailbox)

    with pytest.raises(RuntimeError):
        for _item in read_mailbox(cfg):
            raise RuntimeError("the queue database is down")  # consumer dies on item 1
    assert len(uids_flags(mailbox)) == 2
    assert not any("\\Seen" in flags for flags in uids_flags(mailbox))
    assert mailbox.list("Processed") == []

    stream = read_mailbox(cfg)
    assert next(stream).source_id == "m1@example.com"
    assert next(stream).source_id == "m2@example.com"  # asking for m2 filed m1
    stream.close()  # the consumer stops without asking for more: m2 stays
    assert len(mailbox.list("INBOX")) == 1 and len(mailbox.list("Processed")) == 1
    assert [i.source_id for i in read_mailbox(cfg)] == ["m2@example.com"]


def test_oversized_message_is_quarantined_by_size_and_moved(mailbox: Dovecot) -> None:
    mailbox.append(mail(1, "x" * 20_000, msgid="big@example.com"))
    mailbox.append(mail(2))

    items = list(read_mailbox(config(mailbox, max_bytes=5_000)))

    big, small = items
    assert isinstance(big, Quarantined) and isinstance(small, RefundRequest)
    assert big.source_id == "big@example.com"
    assert "larger than the 5,000-byte limit" in big.reason
    assert "20," in big.reason and "bytes" in big.reason  # the actual size, formatted
    assert "Processed" in big.reason
    assert "ORD-100001" in big.excerpt and "ada@example.com" in big.excerpt
    assert mailbox.list("INBOX") == [] and len(mailbox.list("Processed")) == 2


def test_html_only_message_is_read_as_text(mailbox: Dovecot) -> None:
    mailbox.append(mail(1, html="<html><body><p>My order <b>ORD-123456</b> arrived "
                                "<i>broken</i>.</p><p>Please refund me.</p></body></html>"))

    (item,) = read_mailbox(config(mailbox))

    assert isinstance(item, RefundRequest)
    assert "ORD-123456 arrived broken" in item.reason_text and "<b>" not in item.reason_text


def test_junk_is_quarantined_and_still_filed(mailbox: Dovecot) -> None:
    mailbox.append(b"Subject: no sender at all\r\nMessage-ID: <junk@x>\r\n\r\nhello\r\n")

    (item,) = read_mailbox(config(mailbox))

    assert isinstance(item, Quarantined) and item.source_id == "junk@x"
    assert mailbox.list("INBOX") == []


def test_processed_folder_with_a_space_is_created(mailbox: Dovecot) -> None:
    mailbox.append(mail(1))
    assert len(list(read_mailbox(config(mailbox, processed_folder="Refund Intake Done")))) == 1
    assert len(mailbox.list("Refund Intake Done")) == 1


def test_reads_another_folder(mailbox: Dovecot) -> None:
    mailbox.create("Refunds")
    mailbox.append(mail(1), folder="Refunds")
    mailbox.append(mail(2))  # INBOX: not configured, not touched

    items = list(read_mailbox(config(mailbox, folder="Refunds")))

    assert [i.source_id for i in items] == ["m1@example.com"]
    assert items[0].source_ref.endswith("/Refunds;uid=1")
    assert mailbox.list("Refunds") == [] and len(mailbox.list("INBOX")) == 1


def test_without_server_move_copies_and_expunges_only_its_own_message(
        mailbox: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imap, "_capabilities", lambda conn: {"IMAP4REV1", "UIDPLUS"})
    mailbox.append(mail(1))
    mailbox.append(mail(2))
    mailbox.append(mail(3), flags="\\Seen \\Deleted")  # a colleague's, not purged yet

    assert len(list(read_mailbox(config(mailbox)))) == 2
    assert [u for u, _ in mailbox.list("INBOX")] == [3]
    assert len(mailbox.list("Processed")) == 2


@pytest.mark.parametrize("caps", [None, {"IMAP4REV1", "UIDPLUS"}], ids=["move", "copy"])
def test_a_failed_move_leaves_the_message_unseen_for_next_run(
        mailbox: Dovecot, monkeypatch: pytest.MonkeyPatch, caps: set[str] | None) -> None:
    if caps is not None:
        monkeypatch.setattr(imap, "_capabilities", lambda conn: caps)
    mailbox.append(mail(1))
    cfg = config(mailbox)
    stream = read_mailbox(cfg)
    assert next(stream).source_id == "m1@example.com"
    mailbox.delete("Processed")  # someone removes the folder mid-run

    with pytest.raises(MailboxError, match="1 handled message.*read again next run"):
        list(stream)
    assert [flags for _, flags in mailbox.list("INBOX")] == [()]  # unseen, not lost
    assert [i.source_id for i in read_mailbox(cfg)] == ["m1@example.com"]  # folder re-created
    assert mailbox.list("INBOX") == [] and len(mailbox.list("Processed")) == 1


def test_missing_folder_is_a_mailbox_error(mailbox: Dovecot) -> None:
    with pytest.raises(MailboxError, match="folder 'Nope' does not exist"):
        list(read_mailbox(config(mailbox, folder="Nope")))


# -- login and TLS ----------------------------------------------------------------------------


def test_wrong_password_is_a_clear_error_without_the_password(
        mailbox: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "Wr0ng-s3cret-Passw0rd"
    monkeypatch.setenv(f"REFUND_BOTS_{SECRET}", wrong)

    with pytest.raises(MailboxError) as caught:
        list(read_mailbox(config(mailbox)))

    text = str(caught.value)
    assert mailbox.user in text and mailbox.host in text and "login failed" in text
    everything = "".join(traceback.format_exception(caught.value))
    assert wrong not in everything and mailbox.password not in everything


def test_missing_secret_says_which_one_to_set(mailbox: Dovecot,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bots.config import ConfigError

    monkeypatch.delenv(f"REFUND_BOTS_{SECRET}")
    if importlib.util.find_spec("keyring"):  # an OS keyring must not answer for the test
        monkeypatch.setattr("keyring.get_password", lambda *a: None)
    with pytest.raises(ConfigError, match=f"REFUND_BOTS_{SECRET}"):
        list(read_mailbox(config(mailbox)))


def test_tls_is_verified_against_the_configured_ca(mailbox: Dovecot) -> None:
    mailbox.append(mail(1))
    assert len(list(read_mailbox(config(mailbox, ca_file=mailbox.cafile)))) == 1


def test_tls_without_the_ca_fails_verification(mailbox: Dovecot) -> None:
    with pytest.raises(MailboxError, match="certificate verify failed.*ca_file"):
        list(read_mailbox(config(mailbox, ca_file=None)))


def test_a_missing_ca_file_is_named(mailbox: Dovecot, tmp_path: Path) -> None:
    with pytest.raises(MailboxError, match="ca_file .*missing.pem does not exist"):
        list(read_mailbox(config(mailbox, ca_file=tmp_path / "missing.pem")))


def test_tls_verification_can_be_switched_off(mailbox: Dovecot) -> None:
    mailbox.append(mail(1))
    assert len(list(read_mailbox(config(mailbox, ca_file=None, verify_tls=False)))) == 1


def test_starttls_on_the_plain_port(mailbox: Dovecot) -> None:
    mailbox.append(mail(1))
    cfg = config(mailbox, port=mailbox.port, ssl=False, starttls=True)
    assert [i.source_id for i in read_mailbox(cfg)] == ["m1@example.com"]


def test_plain_imap(mailbox: Dovecot) -> None:
    mailbox.append(mail(1))
    cfg = config(mailbox, port=mailbox.port, ssl=False, ca_file=None)
    assert [i.source_id for i in read_mailbox(cfg)] == ["m1@example.com"]


def test_nothing_listening_is_a_mailbox_error(mailbox: Dovecot) -> None:
    port = dovecot_helper.free_port()
    with pytest.raises(MailboxError, match=f"{mailbox.user}@127.0.0.1:{port}: cannot connect"):
        list(read_mailbox(config(mailbox, port=port)))


# -- why imap.py drops below ImapSmtp (canaries: if these fail, rpaframework changed) ---------


def test_canary_imapsmtp_authorize_imap_does_not_verify_certificates(mailbox: Dovecot) -> None:
    """authorize_imap trusts the self-signed test certificate without being told to."""
    from RPA.Email.ImapSmtp import ImapSmtp

    lib = ImapSmtp()
    lib.authorize_imap(mailbox.user, mailbox.password, mailbox.host, mailbox.ssl_port)
    assert lib.imap_conn is not None
    lib.imap_conn.logout()
    lib.imap_conn = None


def test_canary_imapsmtp_list_messages_loses_unseen_mail(mailbox: Dovecot) -> None:
    """list_messages("UNSEEN") on Dovecot lists nothing and marks the mail read.

    It fetches `(UID RFC822)` in the read-write INBOX, which sets \\Seen; the server
    then reports `UID 1 FLAGS (\\Seen) RFC822 {n}` and ImapSmtp's `UID (\\d+) RFC822`
    pattern no longer matches, so the message is skipped. A bot using it would
    never see those requests again.
    """
    from RPA.Email.ImapSmtp import ImapSmtp

    mailbox.append(mail(1))
    lib = ImapSmtp()
    lib.authorize_imap(mailbox.user, mailbox.password, mailbox.host, mailbox.ssl_port)
    listed = lib.list_messages("UNSEEN")
    lib.imap_conn.logout()
    lib.imap_conn = None
    assert listed == []
    assert "\\Seen" in mailbox.list("INBOX")[0][1]


def test_canary_imapsmtp_move_deletes_mail_when_the_copy_fails(mailbox: Dovecot) -> None:
    """move_messages ignores a failed COPY, then flags \\Deleted and expunges: mail gone."""
    from RPA.Email.ImapSmtp import ImapSmtp

    mailbox.append(mail(1))
    lib = ImapSmtp()
    lib.authorize_imap(mailbox.user, mailbox.password, mailbox.host, mailbox.ssl_port)
    moved = lib.move_messages({"uid": "1"}, target_folder="NoSuchFolder", source_folder="INBOX")
    lib.imap_conn.logout()
    lib.imap_conn = None
    assert moved is True
    assert mailbox.list("INBOX") == [] and "NoSuchFolder" not in mailbox.folders()


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"ssl": True, "starttls": True}, "choose one of ssl"),
    ({"folder": 'In"box'}, "printable ASCII"),
    ({"processed_folder": "Erledigt/Geprüft"}, "printable ASCII"),
    ({"processed_folder": "INBOX"}, "must differ"),
    ({"order_patterns": ["ORD-("]}, "not a valid regex"),
    ({"surprise": 1}, "Extra inputs"),
])
def test_config_rejects_inconsistent_settings(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MailboxConfig(host="imap.example.com", user="u", password_secret="P", **fields)


def test_config_defaults() -> None:
    cfg = MailboxConfig(host="imap.example.com", user="refunds@shop.example",
                        password_secret="MAILBOX_PASSWORD")
    assert (cfg.kind, cfg.port, cfg.ssl, cfg.verify_tls, cfg.folder, cfg.processed_folder,
            cfg.provider) == ("imap", 993, True, True, "INBOX", "Processed", "imap")
    assert cfg.label == "refunds@shop.example@imap.example.com/INBOX"


# -- Exchange (no tenant here: a fake of RPA.Email.Exchange exercises the adapter only) ------


class _FakeItem:
    def __init__(self, n: int, raw: bytes) -> None:
        self.id, self.changekey, self.message_id = f"AAMk{n}", f"CK{n}", f"<m{n}@example.com>"
        self.mime_content, self.size, self.subject = raw, len(raw), f"order {n}"
        self.datetime_received, self.is_read, self.saved = None, False, False

    def save(self, update_fields: list[str]) -> None:
        self.saved = update_fields == ["is_read"] and self.is_read


class _FakeQuery(list):  # type: ignore[type-arg]
    def filter(self, is_read: bool) -> _FakeQuery:
        return _FakeQuery(i for i in self if i.is_read == is_read)

    def order_by(self, field: str) -> _FakeQuery:
        return self


class _FakeExchange:
    instances: list[_FakeExchange] = []

    def __init__(self, tenant: str | None = None) -> None:
        self.tenant, self.moved, self.folders, self.auth = tenant, [], [], {}
        self.items = _FakeQuery([_FakeItem(1, mail(1)), _FakeItem(2, mail(2, "x" * 9000))])
        _FakeExchange.instances.append(self)

    def authorize(self, username: str, **kwargs: Any) -> None:
        if kwargs.get("password") == "bad":
            raise RuntimeError("401 Unauthorized")
        self.auth = {"username": username, **kwargs}

    def create_folder(self, name: str) -> None:
        if name in self.folders:
            raise RuntimeError("ErrorFolderExists")
        self.folders.append(name)

    def list_messages(self, folder: str, items_only: bool) -> _FakeQuery:
        assert items_only
        return self.items

    def move_message(self, msg: dict[str, str], target: str) -> None:
        self.moved.append((msg["id"], target))


@pytest.fixture
def fake_exchange(monkeypatch: pytest.MonkeyPatch) -> type[_FakeExchange]:
    import RPA.Email.Exchange

    _FakeExchange.instances.clear()
    monkeypatch.setattr(RPA.Email.Exchange, "Exchange", _FakeExchange)
    return _FakeExchange


def test_exchange_adapter_reads_marks_and_moves(fake_exchange: type[_FakeExchange],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUND_BOTS_EXO", "pw")
    cfg = MailboxConfig(provider="exchange", host="outlook.office365.com", user="bot@shop.example",
                        password_secret="EXO", exchange_mailbox="refunds@shop.example",
                        max_bytes=5_000)

    items = list(read_mailbox(cfg))

    assert isinstance(items[0], RefundRequest) and items[0].source_id == "m1@example.com"
    assert isinstance(items[1], Quarantined) and "5,000-byte limit" in items[1].reason
    lib = fake_exchange.instances[0]
    assert lib.auth["primary_smtp_address"] == "refunds@shop.example"
    assert lib.auth["server"] == "outlook.office365.com" and lib.auth["autodiscover"] is False
    assert lib.moved == [("AAMk1", "Processed"), ("AAMk2", "Processed")]
    assert all(i.saved for i in lib.items)


def test_exchange_login_failure_is_a_mailbox_error(fake_exchange: type[_FakeExchange],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUND_BOTS_EXO", "bad")
    cfg = MailboxConfig(provider="exchange", host="outlook.office365.com", user="bot@x.example",
                        password_secret="EXO")
    with pytest.raises(MailboxError, match="login failed for user bot@x.example"):
        list(read_mailbox(cfg))


# -- the helper's own contract ----------------------------------------------------------------


def test_missing_dovecot_skips_locally_but_fails_under_ci(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dovecot_helper, "DOVECOT", tmp_path / "no-dovecot")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="test-services.sh"):
        dovecot_helper.require_dovecot()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        dovecot_helper.require_dovecot()
