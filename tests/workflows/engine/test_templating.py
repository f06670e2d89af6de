from __future__ import annotations

import pytest

from workflows.engine.templating import (
    TemplateError,
    template_check,
    template_parse,
    template_render,
)

CONTEXT = {
    "user": {"first_name": "Ann <b>", "balance": 12345, "level": "", "referrals": 2},
    "vars": {"city": "Paris", "price": "1234.5"},
    "bot": {"username": "demo_bot"},
}


def test_renders_paths_and_escapes_values_not_literal_html():
    out = template_render("<b>Hi</b> {{ user.first_name }} from {{vars.city}}", CONTEXT)
    assert out == "<b>Hi</b> Ann &lt;b&gt; from Paris"


def test_missing_values_render_empty_and_default_filter():
    assert template_render("[{{ vars.nothing }}]", CONTEXT) == "[]"
    assert template_render('{{ vars.nothing | default:"friend" }}', CONTEXT) == "friend"
    assert template_render("{{ user.level|default:'Bronze' }}", CONTEXT) == "Bronze"


def test_number_formatting_filters():
    assert template_render("{{ user.balance | number }}", CONTEXT) == "12\u202f345"
    assert template_render("{{ vars.price | number:2 }}", CONTEXT) == "1\u202f234.50"
    assert template_render("{{ vars.price | round }}", CONTEXT) == "1235"
    assert (
        template_render("{{ user.referrals }} friend{{ user.referrals | plural }}", CONTEXT)
        == "2 friends"
    )
    assert template_render("{{ vars.city | upper | truncate:3 }}", CONTEXT) == "PA…"


def test_unescaped_mode_for_variables():
    assert template_render("{{ user.first_name }}", CONTEXT, escape=False) == "Ann <b>"


@pytest.mark.parametrize(
    "source",
    [
        "{{ user.__class__ }}",
        "{{ user.first_name.__class__.__mro__ }}",
        "{{ settings.SECRET_KEY }}",
        "{{ vars.city.__init__.__globals__ }}",
        "{{ user._meta }}",
        "{{ user.objects.all }}",
        "{{ __import__('os') }}",
        "{{ user.first_name | attr:'x' }}",
        "{{ user.first_name() }}",
        "{{ vars['city'] }}",
    ],
)
def test_sandbox_rejects_everything_but_whitelisted_paths(source):
    with pytest.raises(TemplateError):
        template_parse(source)


def test_sandbox_at_render_time_only_walks_plain_dicts():
    class Sneaky:
        secret = "s3cret"

    context = {
        "user": {"first_name": Sneaky()},
        "vars": {"obj": Sneaky(), "d": {"_hidden": 1}},
        "bot": {},
    }
    assert template_render("{{ user.first_name }}", context) == ""
    assert template_render("{{ vars.obj.secret }}", context) == ""
    assert template_render("[{{ vars.d }}]", context) == "[]"
    # Even a path that parses cannot reach an underscore key.
    assert template_check("{{ vars._hidden }}") is not None


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("Hello {{ user.first_name", "never closed"),
        ("Hello }}", "never opened"),
        ("{{ }}", "empty"),
        ("{{ user.nickname }}", "unknown variable"),
        ("{{ balance }}", "unknown variable"),
        ("{{ user.balance | money }}", "unknown filter"),
        ('{{ user.balance | default:"x }}', "quote"),
        ("{{ user.balance | upper:2 }}", "no argument"),
    ],
)
def test_parse_errors_are_readable(source, fragment):
    problem = template_check(source)
    assert problem is not None and fragment in problem


def test_values_are_never_rendered_twice():
    """A user's answer that looks like a template stays text (no second evaluation)."""
    context = {"user": {}, "vars": {"city": "{{ user.__class__ }} <script>"}, "bot": {}}
    assert template_render("{{ vars.city }}", context) == "{{ user.__class__ }} &lt;script&gt;"
