"""Drives an rlvr server with the official `openai` client, as a user would; run by
`tests/service_openai.rs`. Usage: python openai_client.py BASE_URL API_KEY BODY_LIMIT OUT.json

Asserts what the client alone can check (shapes, counts, error types) and writes every response,
dumped, to OUT.json for the Rust side to check values against the model.
"""

import json
import sys

import openai

base, key, limit, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)
out = {"version": openai.__version__}
ids = {"return_token_ids": True}

# Completions, not streamed: n, logprobs with alternatives.
r = client.completions.create(model="test", prompt="Hello world", max_tokens=5, temperature=1.0, seed=3, n=2,
                              logprobs=3, extra_body=ids)
assert len(r.choices) == 2 and r.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in r.choices)
for c in r.choices:
    assert len(c.logprobs.top_logprobs) == len(c.logprobs.tokens)
    assert all(1 <= len(t) <= 3 for t in c.logprobs.top_logprobs)
out["completion"] = r.model_dump()

# Completions, streamed, with the usage chunk.
chunks = list(client.completions.create(model="test", prompt="Hello world", max_tokens=4, temperature=0, n=2,
                                        stream=True, stream_options={"include_usage": True}))
assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8, chunks[-1]
assert all(c.usage is None for c in chunks[:-1])
out["completion_stream"] = [c.model_dump() for c in chunks]
greedy = client.completions.create(model="test", prompt="Hello world", max_tokens=4, temperature=0, n=2)
assert all(c.text == greedy.choices[0].text for c in greedy.choices)
streamed = "".join(c.choices[0].text for c in chunks[:-1] if c.choices[0].index == 0)
assert streamed == greedy.choices[0].text, (streamed, greedy.choices[0].text)
assert chunks[-1].usage.prompt_tokens == greedy.usage.prompt_tokens

# Chat, not streamed, with top_logprobs; then streamed with usage.
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
r = client.chat.completions.create(model="test", messages=messages, max_tokens=5, temperature=1.0, seed=5, n=2,
                                   logprobs=True, top_logprobs=4, extra_body=ids)
assert len(r.choices) == 2
for c in r.choices:
    assert all(len(t.top_logprobs) == 4 for t in c.logprobs.content)
    assert all(t.top_logprobs[0].logprob >= t.logprob - 1e-6 for t in c.logprobs.content)
out["chat"] = r.model_dump()
chunks = list(client.chat.completions.create(model="test", messages=messages, max_tokens=4, temperature=0,
                                             stream=True, stream_options={"include_usage": True}))
assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
assert chunks[-1].usage.prompt_tokens == r.usage.prompt_tokens
out["chat_stream_usage"] = chunks[-1].usage.model_dump()

# Penalties and logit bias (values checked on the Rust side).
r = client.completions.create(model="test", prompt="Hello world", max_tokens=8, temperature=1.0, seed=9,
                              presence_penalty=0.8, frequency_penalty=0.5, logit_bias={"5": 2.0}, logprobs=1,
                              extra_body={"repetition_penalty": 1.3, **ids})
out["penalised"] = r.model_dump()
r = client.completions.create(model="test", prompt="Hello world", max_tokens=4, temperature=0,
                              logit_bias={"42": 100}, extra_body=ids)
out["forced"] = r.model_dump()

# Tools: rendered as given (checked on the Rust side from the returned prompt), a wide integer too.
tools = [{"type": "function", "function": {"name": "get_weather", "strict": True, "description": None,
          "parameters": {"type": "object", "properties": {"t": {"type": "number", "minimum": 0.00001,
                                                                "maximum": 123456789012345678901234567890}}}}}]
r = client.chat.completions.create(model="test", messages=messages, tools=tools, max_tokens=3, temperature=0,
                                   extra_body={"return_prompt": True, "chat_template_kwargs": {"enable_thinking": True}})
out["tools"] = r.model_dump()


def error_of(call):
    try:
        call()
    except openai.APIStatusError as e:
        return {"status": e.status_code, "body": e.body, "kind": type(e).__name__}
    raise AssertionError("expected an error")


errors = {}
errors["json_object"] = error_of(lambda: client.chat.completions.create(
    model="test", messages=messages, max_tokens=3, response_format={"type": "json_object"}))
errors["json_schema"] = error_of(lambda: client.chat.completions.create(
    model="test", messages=messages, max_tokens=3,
    response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}))
errors["temperature"] = error_of(lambda: client.completions.create(model="test", prompt="x", temperature=-1))
errors["model"] = error_of(lambda: client.completions.create(model="other", prompt="x"))
errors["logit_bias"] = error_of(lambda: client.completions.create(model="test", prompt="x", logit_bias={"abc": 1}))
errors["presence_penalty"] = error_of(lambda: client.completions.create(model="test", prompt="x", presence_penalty=3))
errors["top_logprobs"] = error_of(lambda: client.chat.completions.create(
    model="test", messages=messages, logprobs=True, top_logprobs=21))
errors["too_large"] = error_of(lambda: client.completions.create(model="test", prompt="x" * (limit + 10)))
bad_key = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
errors["api_key"] = error_of(lambda: bad_key.completions.create(model="test", prompt="x", max_tokens=1))
errors["admin"] = error_of(lambda: client.post("/weights", body={"path": "/etc/passwd", "checksum": "00"},
                                               cast_to=object))
out["errors"] = errors

with open(out_path, "w") as f:
    json.dump(out, f)
