"""A Claude Code-shaped request body of about KB kilobytes, for bench/run.sh (BODY_KB): a long
system prompt with cache_control, 40 tools with JSON schemas, a conversation of tool results and
tool calls, cache_control on the last message. `model`, `stream` and `max_tokens` sit first, in
the middle or last depending on the size, as different clients place them.

Usage: python3 bench/claude_code_body.py KB json|sse > body.json
"""
import json
import sys

kb, mode = int(sys.argv[1]), sys.argv[2]
tools = [{"name": f"tool_{i}", "description": "Runs a thing. " * 20,
          "input_schema": {"type": "object", "properties": {"path": {"type": "string", "description": "A path"},
                                                             "limit": {"type": "integer"}}, "required": ["path"]}}
         for i in range(40)]
system = [{"type": "text", "text": "You are Claude Code. " * 600, "cache_control": {"type": "ephemeral"}}]
messages, size, i = [], len(json.dumps([tools, system])), 0
while size < kb * 1024:
    result = "line of a file with some code in it; \\\"quoted\\\" and unicode é; " * 40
    messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i:04d}", "content": result}]})
    messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{i + 1:04d}", "name": "tool_1",
                                                       "input": {"path": "src/main.rs", "model": "not-the-model"}}]})
    size += len(json.dumps(messages[-2:]))
    i += 2
messages.append({"role": "user", "content": [{"type": "text", "text": "go on", "cache_control": {"type": "ephemeral"}}]})
head = {"model": "claude-sonnet-4-6", "max_tokens": 32000, "stream": mode == "sse"}
rest = {"system": system, "tools": tools, "metadata": {"user_id": f"user_bench_account_session_{kb}"},
        "thinking": {"type": "enabled", "budget_tokens": 31999}}
if kb < 100:
    body = {**head, **rest, "messages": messages}          # the head first
elif kb < 200:
    body = {**rest, **head, "messages": messages}          # in the middle
else:
    body = {**rest, "messages": messages, **head}          # last, after 300 KB
sys.stdout.write(json.dumps(body, ensure_ascii=False))
