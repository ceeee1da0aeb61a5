"""Chat through Apprise: what its json:// and form:// targets POST to a local
webhook, and that a URL's credentials never reach an error, a log line or the
operator's log handlers."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from gitferry.notify import NotifyError, chat, redact
from tests.harness.receivers import ChatReceiver

PASSWORD = "s3cret-pass-word"


@pytest.fixture
def hook() -> Iterator[ChatReceiver]:
    server = ChatReceiver()
    server.start()
    yield server
    server.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_json_target_gets_title_body_and_type(hook: ChatReceiver) -> None:
    url = hook.apprise_url("json", "/chat/hook", user="bot", password=PASSWORD)
    chat.send(url, chat.Message("apps/web failed: RenderFailed", "deploy/a.yaml: bad", "failure"))
    (msg,) = hook.wait(1)
    assert msg["title"] == "apps/web failed: RenderFailed"
    assert msg["message"] == "deploy/a.yaml: bad"
    assert msg["type"] == "failure"
    (got,) = hook.received
    assert got.path == "/chat/hook" and got.basic_auth == ("bot", PASSWORD)


def test_form_target_gets_the_same_fields(hook: ChatReceiver) -> None:
    chat.send(hook.apprise_url("form", "/f"), chat.Message("t", "line 1\nline 2", "success"))
    (msg,) = hook.wait(1)
    assert (msg["title"], msg["message"], msg["type"]) == ("t", "line 1\nline 2", "success")
    assert hook.received[0].content_type == "application/x-www-form-urlencoded"


def test_a_refused_connection_is_retryable_and_names_no_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"json://bot:{PASSWORD}@127.0.0.1:{_closed_port()}/private-path-token"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NotifyError) as e:
        chat.send(url, chat.Message("t", "b"), label="target 1 of 1")
    assert e.value.retryable
    assert e.value.message.startswith("target 1 of 1 (JSON): not delivered")
    for text in (e.value.message, caplog.text):
        assert PASSWORD not in text and "private-path-token" not in text


def test_an_unusable_url_is_not_retried_and_is_not_echoed() -> None:
    with pytest.raises(NotifyError) as e:
        chat.send("nosuchservice://user:hunter2-pw@example/x", chat.Message("t", "b"))
    assert not e.value.retryable
    assert "nosuchservice://" in e.value.message and "hunter2-pw" not in e.value.message
    with pytest.raises(NotifyError, match="not an Apprise URL"):
        chat.send("just-a-token-string", chat.Message("t", "b"))


def test_apprise_never_writes_to_the_operators_log() -> None:
    logger = logging.getLogger("apprise")
    assert logger.propagate is False
    assert logger.getEffectiveLevel() >= logging.WARNING  # no DEBUG payloads or URLs


def test_urls_in_a_secret_value() -> None:
    text = "# team chat\nslack://a/b/c\n\n  json://h/x   form://h/y\n"
    assert chat.split_urls(text) == ["slack://a/b/c", "json://h/x", "form://h/y"]


def test_what_counts_as_secret_in_a_url() -> None:
    pieces = chat.secrets_of("slack://TAAAAAAA/BBBBBBBB/cccccccccccc?footer=no")
    assert {"TAAAAAAA", "BBBBBBBB", "cccccccccccc"} <= set(pieces)
    net = chat.secrets_of(f"json://u:{PASSWORD}@hooks.example.com/path-token")
    assert PASSWORD in net and "path-token" in net and "hooks.example.com" not in net
    said = "A Connection error occurred sending JSON notification to hooks.example.com."
    assert redact(said, net) == said
    assert (
        redact(f"failed for TAAAAAAA/x with {PASSWORD}", pieces + net)
        == "failed for ***/x with ***"
    )


def test_a_url_masked_by_apprise_is_not_shown_at_all() -> None:
    from gitferry.notify.errors import redact

    text = "Could not load E-Mail URL: mailto://***:M...7@1...1:1?to=a...d"
    assert redact(text, ["MailPw77"]) == "Could not load E-Mail URL: <url>"
