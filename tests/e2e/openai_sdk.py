"""The official `openai` Python package against the promptops gateway.

Run by tests/e2e/tests/execution.rs with PROMPTOPS_URL and PROMPTOPS_API_KEY
(a promptops API key); exits non-zero on the first failed check.
"""

import os
import sys

from openai import OpenAI, BadRequestError

client = OpenAI(base_url=os.environ["PROMPTOPS_URL"] + "/v1", api_key=os.environ["PROMPTOPS_API_KEY"])


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


models = [m.id for m in client.models.list()]
check("mock/echo" in models, f"models.list has mock/echo: {models}")

completion = client.chat.completions.create(
    model="mock/echo", messages=[{"role": "user", "content": "hello from python"}]
)
check(completion.choices[0].message.content == "hello from python", "a chat completion")
check(completion.usage.completion_tokens == 3, f"usage: {completion.usage}")

stream = client.chat.completions.create(
    model="mock/echo",
    messages=[{"role": "user", "content": "streamed words here"}],
    stream=True,
    stream_options={"include_usage": True},
)
pieces, usage = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
check("".join(pieces) == "streamed words here", f"a streamed completion: {pieces}")
check(usage is not None and usage.completion_tokens == 3, f"streamed usage: {usage}")

managed = client.chat.completions.create(
    model="prompt/support/greet",
    messages=[],
    extra_body={"variables": {"who": "Ada"}},
)
check(managed.choices[0].message.content == "Greet Ada", "a managed prompt (label production)")

try:
    client.chat.completions.create(model="prompt/support/greet", messages=[])
    check(False, "missing variables are refused")
except BadRequestError as err:
    check("who" in str(err), f"missing variables are named: {err}")
