"""The official `anthropic` Python SDK against a CloudRouter gateway.

Run with one command (installs the SDK into a venv, builds the testbed, runs pytest):

    tests/python/run.sh

The gateway comes from the `testbed` fixture (conftest.py).
"""

import anthropic
import pytest

MODEL = "claude-sonnet-4-6"


def client(info, bearer=False, key=None):
    key = key or info["api_key"]
    if bearer:
        return anthropic.Anthropic(base_url=info["base_url"], auth_token=key, max_retries=0)
    return anthropic.Anthropic(base_url=info["base_url"], api_key=key, max_retries=0)


def test_create(testbed):
    msg = client(testbed).messages.create(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "Hello"}]
    )
    assert msg.type == "message"
    assert msg.id.startswith("msg_")
    assert msg.model == MODEL
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert msg._request_id.startswith("req_")


def test_create_with_bearer_and_beta(testbed):
    msg = client(testbed, bearer=True).beta.messages.create(
        model=MODEL,
        max_tokens=50,
        betas=["interleaved-thinking-2025-05-14"],
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert msg.model == MODEL


def test_stream(testbed):
    events = []
    with client(testbed).messages.stream(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "Stream please"}]
    ) as stream:
        for event in stream:
            events.append(event.type)
        text = stream.get_final_text()
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert "content_block_delta" in events
    assert events[-1] == "message_stop"
    assert text
    assert final.usage.output_tokens > 1
    assert final.stop_reason == "end_turn"


def test_raw_stream_events(testbed):
    stream = client(testbed).messages.create(
        model=MODEL, max_tokens=100, stream=True, messages=[{"role": "user", "content": "Hi"}]
    )
    types = [e.type for e in stream]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert "message_delta" in types


def test_count_tokens(testbed):
    r = client(testbed).messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
    assert r.input_tokens > 0


def test_models(testbed):
    ids = [m.id for m in client(testbed).models.list(limit=1000)]
    assert MODEL in ids
    assert all(i.startswith("claude-") for i in ids)
    one = client(testbed).models.retrieve(MODEL)
    assert one.id == MODEL and one.display_name
    limited = [m.id for m in client(testbed, key=testbed["api_key_haiku_only"]).models.list()]
    assert limited == ["claude-haiku-5-5"]


def test_errors(testbed):
    with pytest.raises(anthropic.AuthenticationError) as e:
        client(testbed, key="cr-wrong").messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.status_code == 401
    assert e.value.body["error"]["type"] == "authentication_error"
    assert e.value.request_id.startswith("req_")
    with pytest.raises(anthropic.PermissionDeniedError):
        client(testbed, key=testbed["api_key_haiku_only"]).messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.NotFoundError):
        client(testbed).messages.create(
            model="claude-does-not-exist", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
