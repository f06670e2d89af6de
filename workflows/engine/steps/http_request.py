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
    STEP_REF,
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
from workflows.engine.steps.set_variable import (
    VARIABLE_PROBLEM,
    VARIABLE_SCHEMA,
    variable_name_problem,
)
from workflows.engine.templating import (
    Placeholder,
    TemplateError,
    template_check,
    template_parse,
    template_render,
    template_value,
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
    """Strings render as templates; one that is exactly a placeholder keeps its value's
    JSON type (``"{{ vars.age }}"`` sends a number), see :func:`template_value`."""
    if isinstance(value, str):
        return template_value(value, context)
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
        elif (
            isinstance(current, list)
            and part.isascii()
            and part.isdigit()
            and int(part) < len(current)
        ):
            current = current[int(part)]
        else:
            return None
    return current


STATUS_RE = re.compile(r"^[1-5](?:\d\d|xx)$")
STATUS_PROBLEM = "a status like 404 or a range like 2xx, 4xx, 5xx"


def status_target(on_status: Any, status: Any) -> str | None:
    """The step for ``status`` in ``on_status``: an exact code (404) before a range (4xx)."""
    if not isinstance(on_status, dict) or not isinstance(status, int):
        return None
    exact = on_status.get(str(status))
    if exact:
        return exact
    return on_status.get(f"{status // 100}xx") or None


def _save_answer(rt: StepRuntime, data: dict, *, body: bool = True) -> None:
    """``save`` (JSON paths from the answer's root), ``save_status``, ``save_headers``.

    ``body`` false (a failure): the ``save`` variables keep their values.
    """
    step = rt.step
    if body:
        document = storable(data.get("json"))
        for name, path in (step.get("save") or {}).items():
            rt.data.variable_set(name, json_pick(document, path))
    if step.get("save_status"):
        rt.data.variable_set(step["save_status"], data.get("status"))
    headers = data.get("headers") or {}
    for name, header in (step.get("save_headers") or {}).items():
        value = headers.get(str(header).lower()) if isinstance(headers, dict) else None
        rt.data.variable_set(name, storable(value))


def save_path_warnings(step: dict) -> list[str]:
    """``save`` paths that find nothing in the step's ``example_response`` (a likely typo,
    such as the ``data.`` prefix on an answer that has no ``data``)."""
    example = step.get("example_response")
    save = step.get("save")
    if example is None or not isinstance(save, dict):
        return []
    warnings = []
    for name, path in save.items():
        if isinstance(path, str) and path and json_pick(example, path) is None:
            top = ", ".join(sorted(example)[:8]) if isinstance(example, dict) else ""
            hint = f" (the example's top-level fields: {top})" if top else ""
            warnings.append(
                f"'save' {name}: the path '{path[:100]}' finds nothing in the example "
                f"response{hint}; paths start at the answer's root"
            )
    return warnings


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
            "One per line: variable: path from the answer's root, e.g. “discount: discount” "
            "or “first: items.0.id”. Numbers, true/false and lists keep their type.",
            schema={"type": "object", "additionalProperties": {"type": "string"}},
            problem="an object of variable name → JSON path",
        ),
        FieldSpec(
            "save_status",
            "line",
            "Save the status code in",
            "A variable name, e.g. order_status (gets 200, 404, …).",
            schema=VARIABLE_SCHEMA,
            problem=VARIABLE_PROBLEM,
        ),
        FieldSpec(
            "save_headers",
            "pairs",
            "Save answer headers",
            "One per line: variable: header name, e.g. “retry_after: Retry-After”.",
            schema={"type": "object", "additionalProperties": {"type": "string"}},
            problem="an object of variable name → header name",
        ),
        FieldSpec(
            "save_error",
            "line",
            "Save the error text in",
            f"A variable name; default {ERROR_VARIABLE}.",
            schema=VARIABLE_SCHEMA,
            problem=VARIABLE_PROBLEM,
        ),
        FieldSpec(
            "example_response",
            "json",
            "Example answer (JSON)",
            "Optional. Publishing warns about 'save' paths that find nothing in it.",
        ),
        FieldSpec(
            "on_status",
            "pairs",
            "Go by status",
            "One per line: status: step, e.g. “404: not_found” or “5xx: later”. "
            "An exact status wins over a range; others use success/failure.",
            schema={
                "type": "object",
                "propertyNames": {"pattern": STATUS_RE.pattern},
                "additionalProperties": STEP_REF,
            },
            problem="an object of status (404, 2xx, 5xx) → step",
        ),
        step_ref("on_success", "On success go to"),
        step_ref("on_failure", "On failure go to"),
        DESCRIPTION_FIELD,
    )
    target_fields = ("on_success", "on_failure")

    def targets(self, step: dict) -> list[tuple[str, Any]]:
        found = super().targets(step)
        on_status = step.get("on_status")
        if isinstance(on_status, dict):
            found.extend((f"status {code}", target) for code, target in on_status.items())
        return found

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
                    checker.add(f"'save' {name}: the JSON path must be a text like items.0.city")
        for key in ("save_status", "save_error"):
            if step.get(key) is not None:
                problem = variable_name_problem(step[key])
                if problem:
                    checker.add(f"'{key}': {problem}")
        save_headers = step.get("save_headers", {})
        if not isinstance(save_headers, dict):
            checker.add("'save_headers' must map variable names to header names")
        else:
            for name, header in save_headers.items():
                problem = variable_name_problem(name)
                if problem:
                    checker.add(f"'save_headers' {name}: {problem}")
                if not isinstance(header, str) or not HEADER_NAME_RE.match(header):
                    checker.add(f"'save_headers' {name}: a header name like Retry-After")
        on_status = step.get("on_status", {})
        if not isinstance(on_status, dict):
            checker.add("'on_status' must map statuses (404, 2xx, 5xx) to steps")
        else:
            for code in on_status:
                if not STATUS_RE.match(str(code)):
                    checker.add(f"'on_status' {str(code)[:20]}: {STATUS_PROBLEM}")

    def warnings(self, step: dict) -> list[str]:
        return save_path_warnings(step)

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
        step = rt.step
        save = step.get("save") or {}
        status = data.get("status")
        by_status = status_target(step.get("on_status"), status)
        error = None
        if not data.get("ok"):
            error = data.get("error") or (f"HTTP {status}" if status else "the request failed")
        elif save and data.get("json_error"):
            error = data["json_error"]
        rt.output["response"] = {key: data.get(key) for key in ("ok", "status") if key in data}
        if by_status is not None and (not error or not data.get("ok")):
            # The server answered with a status the step branches on (404, 5xx, …):
            # save what the answer has and go there; an error status is still the error.
            rt.output["response"]["branch"] = f"status {status}"
            _save_answer(rt, data)
            _error_set(rt, storable(str(error))[:ERROR_TEXT_LIMIT] if error else None)
            return Goto(by_status)
        if error:
            if status is not None:
                _save_answer(rt, data, body=False)
            return _failed(rt, error)
        _save_answer(rt, data)
        _error_set(rt, None)
        return Goto(step.get("on_success"))

    atomic = True


def _error_set(rt: StepRuntime, text: str | None) -> None:
    """The error variable (``save_error``, default ``http_error``): the reason, or removed."""
    name = rt.step.get("save_error") or ERROR_VARIABLE
    if text is not None:
        rt.data.variable_set(name, text)
    elif name in rt.data.variables:
        rt.data.variable_delete(name)


def _failed(rt: StepRuntime, error: Any) -> Outcome:
    """``on_failure``, with the reason in ``vars.http_error`` (and the step log)."""
    text = storable(str(error))[:ERROR_TEXT_LIMIT]
    rt.output["response"] = {"ok": False, **rt.output.get("response", {}), "error": text}
    _error_set(rt, text)
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
