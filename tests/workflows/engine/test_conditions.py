from __future__ import annotations

import pytest

from workflows.engine.conditions import ConditionError, condition_evaluate, condition_parse

CONTEXT = {
    "user": {"balance": 150, "level": "Silver", "first_name": "Ann"},
    "vars": {"age": "25", "city": "Paris", "tags": ["vip", "new"], "empty": ""},
    "bot": {"username": "demo_bot"},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("user.balance >= 100", True),
        ("user.balance < 100", False),
        ("user.balance == 150", True),
        ("user.balance != 150", False),
        ("user.balance <= 150 and user.balance > 149", True),
        ("vars.age > 18", True),  # numeric text compares as a number
        ("vars.age < 3", False),
        ('user.level == "silver"', True),  # case-insensitive text equality
        ('vars.city contains "ari"', True),
        ('vars.tags contains "vip"', True),
        ('vars.city in ["Paris", "Rome"]', True),
        ('vars.city not in ["Paris", "Rome"]', False),
        ("vars.city is set", True),
        ("vars.empty is set", False),
        ("vars.missing is not set", True),
        ('user.balance > 1000 or vars.city == "Paris"', True),
        ('not (user.balance > 1000) and (vars.city == "Rome" or vars.age == 25)', True),
        ("vars.city > 3", False),  # nonsense comparison is false, not an error
        ("vars.missing > 3", False),
    ],
)
def test_evaluates(source, expected):
    assert condition_evaluate(source, CONTEXT) is expected


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("balance > 3", "unknown variable"),
        ("user.nickname == 'x'", "unknown variable"),
        ("user.balance >", "expected"),
        ("user.balance >> 3", "expected"),
        ("(user.balance > 3", "expected )"),
        ("__import__('os')", "not a variable name"),
        ("user.balance > 3 ; drop", "cannot read"),
        ("", "empty"),
    ],
)
def test_rejects_bad_expressions(source, fragment):
    with pytest.raises(ConditionError) as info:
        condition_parse(source)
    assert fragment in str(info.value)
