"""``http_request``: call an HTTP endpoint from a Celery task, branch on the answer.

Method, URL, headers and body are templates. The request runs outside the user's
event (it may take seconds); its result comes back through the runner's timer path
and fields of a JSON answer are stored in variables (``save``).

User values never change a request's shape: a value rendered into the URL is
percent-encoded as one piece of data, a header value with a line break or another
control character is refused, and so is a request the task could not send. Whatever
goes wrong on our side (a refused request, DNS, TLS, the deadline, an answer too big
or not JSON where ``save`` needs JSON) takes ``on_failure`` with the reason in
``vars.http_error``, so the user always hears back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from workflows.engine.steps.base import (
    DESCRIPTION_FIELD,
    Checker,
    FieldSpec,
    Goto,
    Outcome,
    Pending,
    StepFailure,
    StepRuntime,
    StepType,
    step_ref,
)
from workflows.engine.steps.set_variable import variable_name_problem
from workflows.engine.templating import (
    Placeholder,
    TemplateError,
    template_check,
    template_parse,
    template_render,
)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_TIMEOUT = 10
MAX_TIMEOUT = 60
DEFAULT_RETRIES = 2
MAX_RETRIES = 5
ERROR_VARIABLE = "http_error"  # vars.http_error: why the last request took on_failure
ERROR_TEXT_LIMIT = 500
MAX_URL_LENGTH = 8_000

HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an RFC 9110 token
# Control characters (tab aside) and lone surrogates: never sent in a header.
HEADER_VALUE_BAD_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
URL_BAD_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# NUL and lone surrogates cannot be stored in a jsonb column (the pending request,
# variables, the step log).
UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")
SURROGATE_RE = re.compile("[\ud800-\udfff]")
HOST_RE = re.compile(r"^[A-Za-z0-9._~:-]+$")  # after IDNA; IPv6 without brackets
# Kept as written when the URL is finished: its structure and existing %-escapes.
URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


class RequestRefused(ValueError):
    """A request that is not sent; the message says why (stored in ``vars.http_error``)."""


def _render_tree(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return template_render(value, context, escape=False)
    if isinstance(value, dict):
        return {key: _render_tree(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_render_tree(item, context) for item in value]
    return value


def url_render(source: str, context: Mapping[str, Any]) -> str:
    """Render a URL template; each value is percent-encoded where it lands.

    A value in the path, the query, the fragment or the host is one piece of data:
    ``/``, ``?``, ``&``, ``=``, ``#``, ``@``, spaces and line breaks in it are encoded,
    so a user's answer never adds a path segment, a parameter or another host. Only a
    value at the very start, before ``://`` (a base address kept in a variable), is
    inserted as written. The operator's literal text is kept; the whole URL is then
    checked by :func:`url_finish`.
    """
    values: list[str] = []
    template_render(source, context, escape=lambda text: values.append(text) or "")
    rendered = iter(values)
    pieces: list[str] = []
    in_base, tail = True, ""
    for part in template_parse(source).parts:
        if isinstance(part, Placeholder):
            value = next(rendered)
            if SURROGATE_RE.search(value):
                raise RequestRefused("a value in the URL contains broken Unicode text")
            text = value if in_base else quote(value, safe="")
        else:
            text = part
        pieces.append(text)
        if in_base:
            window = tail + text
            in_base, tail = "://" not in window, window[-2:]
    return url_finish("".join(pieces))


def url_finish(url: str) -> str:
    """The URL as it is sent, or :class:`RequestRefused` saying what is wrong with it.

    Idempotent (the task checks a stored request again). Characters that cannot travel
    in a URL (spaces, non-ASCII letters) are percent-encoded, the host name is
    IDNA-encoded; control characters are refused, never cleaned away silently.
    """
    if URL_BAD_RE.search(url):
        raise RequestRefused("the URL contains a line break, a tab or another control character")
    if len(url) > MAX_URL_LENGTH:
        raise RequestRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RequestRefused(f"the URL is not valid: {exc}") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise RequestRefused(f"not an http(s) URL: {url[:200]}")
    if "@" in parts.netloc:
        raise RequestRefused(
            "a user name or password in the URL is not supported; use an Authorization header"
        )
    host = parts.hostname
    try:
        host = host if host.isascii() else host.encode("idna").decode("ascii")
    except UnicodeError:
        host = ""
    if not HOST_RE.match(host):
        raise RequestRefused(f"the host name {parts.hostname[:100]!r} is not valid")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    finished = urlunsplit(
        (
            parts.scheme,
            netloc,
            quote(parts.path, safe=URL_SAFE),
            quote(parts.query, safe=URL_SAFE),
            quote(parts.fragment, safe=URL_SAFE),
        )
    )
    if len(finished) > MAX_URL_LENGTH:
        raise RequestRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    return finished


def headers_check(headers: Any) -> dict[str, str]:
    """Rendered headers as they are sent, or :class:`RequestRefused` (e.g. a CR/LF)."""
    if not isinstance(headers, dict):
        raise RequestRefused("the headers must be an object")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME_RE.match(name):
            raise RequestRefused(f"{str(name)[:100]!r} is not a valid header name")
        if not isinstance(value, str):
            raise RequestRefused(f"header '{name}': the value must be a text")
        if HEADER_VALUE_BAD_RE.search(value):
            raise RequestRefused(
                f"header '{name}': the value contains a line break or another control "
                "character, so the request was not sent"
            )
        checked[name] = value
    return checked


def _body_check(value: Any) -> None:
    if isinstance(value, str) and UNSTORABLE_RE.search(value):
        raise RequestRefused("the body contains a NUL character or broken Unicode text")
    if isinstance(value, dict):
        for item in value.values():
            _body_check(item)
    elif isinstance(value, list):
        for item in value:
            _body_check(item)


def request_check(request: dict) -> dict:
    """A stored request made safe to send again (idempotent), or :class:`RequestRefused`.

    Also covers requests stored before these checks existed.
    """
    if request.get("method") not in METHODS:
        raise RequestRefused(f"unknown method {str(request.get('method'))[:20]!r}")
    url = request.get("url")
    if not isinstance(url, str):
        raise RequestRefused("the URL is missing")
    _body_check(request.get("body"))
    return {
        **request,
        "url": url_finish(url),
        "headers": headers_check(request.get("headers") or {}),
    }


def request_build(step: dict, context: Mapping[str, Any]) -> dict:
    """The request of an ``http_request`` step, rendered for one user and checked.

    Raises :class:`RequestRefused` for what user values made unsendable and
    :class:`TemplateError` for a broken template (caught at publishing).
    """
    return request_check(
        {
            "method": step.get("method", "GET"),
            "url": url_render(step["url"], context),
            "headers": _render_tree(step.get("headers") or {}, context),
            "body": _render_tree(step.get("body"), context),
            "timeout": min(float(step.get("timeout") or DEFAULT_TIMEOUT), MAX_TIMEOUT),
            "retries": min(int(step.get("retries", DEFAULT_RETRIES)), MAX_RETRIES),
        }
    )


def storable(value: Any) -> Any:
    """``value`` with NUL and lone surrogates replaced in every text (jsonb refuses them)."""
    if isinstance(value, str):
        return UNSTORABLE_RE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
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
    label = "Call an HTTP endpoint"
    description = "Call an HTTP endpoint in the background, save parts of the answer, branch."
    fields = (
        FieldSpec("method", "choice", "Method", choices=tuple((m, m) for m in METHODS)),
        FieldSpec(
            "url",
            "line",
            "URL",
            "Templates work: https://api.example.com/{{ user.id }}",
            schema={"type": "string"},
            required=True,
        ),
        FieldSpec(
            "headers",
            "pairs",
            "Headers",
            "One per line: Name: value",
            schema={"type": "object", "additionalProperties": {"type": "string"}},
            problem="an object of header name → text",
        ),
        FieldSpec("body", "json", "Body (JSON)", "Optional. Strings inside may be templates."),
        FieldSpec(
            "timeout",
            "number",
            "Timeout per try (seconds)",
            f"1-{MAX_TIMEOUT}, default {DEFAULT_TIMEOUT}.",
            schema={"type": "number", "minimum": 1, "maximum": MAX_TIMEOUT},
        ),
        FieldSpec(
            "retries",
            "int",
            "Retries",
            f"0-{MAX_RETRIES}, default {DEFAULT_RETRIES}.",
            schema={"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
        ),
        FieldSpec(
            "save",
            "pairs",
            "Save from the answer",
            "One per line: variable: path, e.g. “discount: data.discount”.",
            schema={"type": "object", "additionalProperties": {"type": "string"}},
            problem="an object of variable name → JSON path",
        ),
        step_ref("on_success", "On success go to"),
        step_ref("on_failure", "On failure go to"),
        DESCRIPTION_FIELD,
    )
    target_fields = ("on_success", "on_failure")

    def check(self, checker: Checker) -> None:
        step = checker.step
        checker.choice("method", METHODS, default="GET")
        checker.template("url", required=True)
        url = step.get("url")
        if isinstance(url, str) and not url.startswith(("https://", "http://", "{{")):
            checker.add("'url' must start with https:// or http://")
        if isinstance(url, str) and URL_BAD_RE.search(url):
            checker.add("'url' contains a line break, a tab or another control character")
        headers = step.get("headers", {})
        if not isinstance(headers, dict):
            checker.add("'headers' must be an object")
        else:
            for key, value in headers.items():
                if not HEADER_NAME_RE.match(key):
                    checker.add(
                        f"header '{key[:100]}': a header name is letters, digits and "
                        "- (no spaces or colons), e.g. X-Api-Key"
                    )
                problem = template_check(value)
                if problem:
                    checker.add(f"header '{key[:100]}': {problem}")
                elif HEADER_VALUE_BAD_RE.search(value):
                    checker.add(f"header '{key[:100]}': the value contains a line break")
        body = step.get("body")
        for problem in _tree_problems(body):
            checker.add(f"'body': {problem}")
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
        try:
            request = request_build(step, rt.context())
        except TemplateError as exc:
            raise StepFailure(f"template error: {exc}") from exc
        except RequestRefused as exc:
            return _failed(rt, exc)
        seq = rt.next_seq()
        rt.output["request"] = {"method": request["method"], "url": request["url"]}
        until = rt.now + timedelta(seconds=request_budget(step))
        return Pending(kind="http", until=until, state={"seq": seq, "request": request})

    def timer(self, rt: StepRuntime, data: dict | None) -> Outcome:
        data = data or {"ok": False, "error": "the request did not finish in time"}
        save = rt.step.get("save") or {}
        error = None
        if not data.get("ok"):
            status = data.get("status")
            error = data.get("error") or (f"HTTP {status}" if status else "the request failed")
        elif save and data.get("json_error"):
            error = data["json_error"]
        rt.output["response"] = {key: data.get(key) for key in ("ok", "status") if key in data}
        if error:
            return _failed(rt, error)
        document = storable(data.get("json"))
        for name, path in save.items():
            rt.data.variable_set(name, json_pick(document, path))
        if ERROR_VARIABLE in rt.data.variables:
            rt.data.variable_delete(ERROR_VARIABLE)
        return Goto(rt.step.get("on_success"))

    atomic = True


def _failed(rt: StepRuntime, error: Any) -> Outcome:
    """``on_failure``, with the reason in ``vars.http_error`` (and the step log)."""
    text = storable(str(error))[:ERROR_TEXT_LIMIT]
    rt.output["response"] = {"ok": False, **rt.output.get("response", {}), "error": text}
    rt.data.variable_set(ERROR_VARIABLE, text)
    return Goto(rt.step.get("on_failure"))


def _tree_problems(value: Any) -> list[str]:
    if isinstance(value, str):
        problem = template_check(value)
        return [problem] if problem else []
    if isinstance(value, dict):
        return [p for item in value.values() for p in _tree_problems(item)]
    if isinstance(value, list):
        return [p for item in value for p in _tree_problems(item)]
    return []
