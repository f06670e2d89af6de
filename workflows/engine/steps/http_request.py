"""``http_request``: call an HTTP endpoint from a Celery task, branch on the answer.

Method, URL, headers and body are templates. The request runs outside the user's
event (it may take seconds); its result comes back through the runner's timer path
and fields of a JSON answer are stored in variables (``save``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from workflows.engine.steps.base import (
    Checker,
    Goto,
    Outcome,
    Pending,
    StepRuntime,
    StepType,
)
from workflows.engine.steps.set_variable import variable_name_problem
from workflows.engine.templating import template_check

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_TIMEOUT = 10
MAX_TIMEOUT = 60
DEFAULT_RETRIES = 2
MAX_RETRIES = 5


def _render_tree(rt: StepRuntime, value: Any) -> Any:
    if isinstance(value, str):
        return rt.render(value, escape=False)
    if isinstance(value, dict):
        return {key: _render_tree(rt, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_render_tree(rt, item) for item in value]
    return value


def json_pick(document: Any, path: str) -> Any:
    """``data.items.0.name`` out of a decoded JSON document (None when absent)."""
    current = document
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def request_budget(step: dict) -> float:
    """Seconds after which a request that has not reported back counts as lost."""
    timeout = min(float(step.get("timeout") or DEFAULT_TIMEOUT), MAX_TIMEOUT)
    retries = min(int(step.get("retries", DEFAULT_RETRIES)), MAX_RETRIES)
    return (timeout + 2 ** min(retries, 4)) * (retries + 1) + 60


class HttpRequestStep(StepType):
    type = "http_request"
    target_fields = ("on_success", "on_failure")

    def check(self, checker: Checker) -> None:
        step = checker.step
        checker.choice("method", METHODS, default="GET")
        checker.template("url", required=True)
        url = step.get("url")
        if isinstance(url, str) and not url.startswith(("https://", "http://", "{{")):
            checker.add("'url' must start with https:// or http://")
        headers = step.get("headers", {})
        if not isinstance(headers, dict):
            checker.add("'headers' must be an object")
        else:
            for key, value in headers.items():
                problem = template_check(value)
                if problem:
                    checker.add(f"header '{key}': {problem}")
        body = step.get("body")
        for problem in _tree_problems(body):
            checker.add(f"'body': {problem}")
        timeout = checker.number("timeout", minimum=1)
        if timeout is not None and timeout > MAX_TIMEOUT:
            checker.add(f"'timeout' must be at most {MAX_TIMEOUT} seconds")
        retries = checker.number("retries", minimum=0)
        if retries is not None and retries > MAX_RETRIES:
            checker.add(f"'retries' must be at most {MAX_RETRIES}")
        save = step.get("save", {})
        if not isinstance(save, dict):
            checker.add("'save' must map variable names to JSON paths")
        else:
            for name, path in save.items():
                problem = variable_name_problem(name)
                if problem:
                    checker.add(f"'save' {name}: {problem}")
                if not isinstance(path, str) or not path:
                    checker.add(f"'save' {name}: the JSON path must be a text like data.city")

    def run(self, rt: StepRuntime) -> Outcome:
        step = rt.step
        request = {
            "method": step.get("method", "GET"),
            "url": rt.render(step["url"], escape=False),
            "headers": _render_tree(rt, step.get("headers") or {}),
            "body": _render_tree(rt, step.get("body")),
            "timeout": min(float(step.get("timeout") or DEFAULT_TIMEOUT), MAX_TIMEOUT),
            "retries": min(int(step.get("retries", DEFAULT_RETRIES)), MAX_RETRIES),
        }
        seq = rt.next_seq()
        rt.output["request"] = {"method": request["method"], "url": request["url"]}
        until = rt.now + timedelta(seconds=request_budget(step))
        return Pending(kind="http", until=until, state={"seq": seq, "request": request})

    def timer(self, rt: StepRuntime, data: dict | None) -> Outcome:
        data = data or {"ok": False, "error": "the request did not finish in time"}
        rt.output["response"] = {
            key: data.get(key) for key in ("ok", "status", "error") if key in data
        }
        if not data.get("ok"):
            return Goto(rt.step.get("on_failure"))
        document = data.get("json")
        for name, path in (rt.step.get("save") or {}).items():
            rt.data.variable_set(name, json_pick(document, path))
        return Goto(rt.step.get("on_success"))

    atomic = True


def _tree_problems(value: Any) -> list[str]:
    if isinstance(value, str):
        problem = template_check(value)
        return [problem] if problem else []
    if isinstance(value, dict):
        return [p for item in value.values() for p in _tree_problems(item)]
    if isinstance(value, list):
        return [p for item in value for p in _tree_problems(item)]
    return []
