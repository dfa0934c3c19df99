"""The official `openai` Python SDK against CloudRouter's `/v1/chat/completions` (OpenAI's format,
served by Claude models): JSON, streaming, a tool-call round trip with streamed arguments, an
image, errors, and the model list. Run by tests/python/run.sh with the anthropic SDK's tests
(the `testbed` fixture is in conftest.py)."""

import json

import openai
import pytest

MODEL = "claude-sonnet-4-6"
PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def client(info, key=None):
    return openai.OpenAI(base_url=info["base_url"] + "/v1", api_key=key or info["api_key"], max_retries=0)


def test_completion(testbed):
    r = client(testbed).chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_completion_tokens=200,
    )
    assert r.object == "chat.completion"
    assert r.model == MODEL
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r._request_id.startswith("req_")


def test_stream_with_usage(testbed):
    stream = client(testbed).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_tool_call_round_trip_with_streamed_arguments(testbed):
    tools = [{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            # the SDK's stream helper parses only strict tools' arguments
            "strict": True,
        },
    }]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    c = client(testbed)
    pieces = 0
    with c.chat.completions.stream(model=MODEL, messages=messages, tools=tools) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                pieces += 1
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    finish = final.choices[0].finish_reason
    assert finish == "tool_calls"
    assert pieces > 1, "the arguments arrive in several deltas"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example"}
    messages.append(final.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees"})
    answer = c.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    assert answer.choices[0].finish_reason == "stop"
    assert "Sunny, 21 degrees" in answer.choices[0].message.content


def test_image(testbed):
    r = client(testbed).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": PIXEL}},
        ]}],
    )
    assert r.choices[0].message.content


def test_errors(testbed):
    with pytest.raises(openai.AuthenticationError) as e:
        client(testbed, key="cr-wrong").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401
    assert e.value.body["type"] == "authentication_error"
    assert e.value.request_id.startswith("req_")
    with pytest.raises(openai.NotFoundError) as e:
        client(testbed).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert "gpt-4o" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client(testbed).chat.completions.create(model=MODEL, n=2, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["param"] is None and "n must be 1" in e.value.body["message"]
    with pytest.raises(openai.PermissionDeniedError):
        client(testbed, key=testbed["api_key_haiku_only"]).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}]
        )


def test_models(testbed):
    ids = [m.id for m in client(testbed).models.list()]
    assert MODEL in ids
    assert client(testbed).models.retrieve(MODEL).owned_by == "anthropic"
