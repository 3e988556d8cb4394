"""Definition templates and cron expressions, checked without Temporal or a database."""

import pytest

from followthrough.domain.cron import InvalidCron, check_cron, check_timezone
from followthrough.infra.templating import MissingVariables, TemplateProblem, render_tree, variables_of


def test_every_string_of_a_nested_tree_is_rendered_and_whole_expressions_keep_their_type():
    tree = {"to": "{{ recipients }}", "subject": "Invoice {{ invoice.number }} is due",
            "lines": [{"amount": "{{ amount }}", "note": "{{ amount }} {{ currency }}"}], "fixed": 3}
    values = {"recipients": ["a@x.example"], "invoice": {"number": "INV-1"}, "amount": 12.5, "currency": "EUR"}
    assert render_tree(tree, values) == {
        "to": ["a@x.example"], "subject": "Invoice INV-1 is due",
        "lines": [{"amount": 12.5, "note": "12.5 EUR"}], "fixed": 3}
    assert render_tree({"n": "{{ amount }}"}, values, native=False) == {"n": "12.5"}
    assert variables_of(tree) == {"recipients", "invoice", "amount", "currency"}


def test_missing_variables_are_named_and_bad_templates_located():
    with pytest.raises(MissingVariables) as missing:
        render_tree({"a": "{{ x }} {{ y }}", "b": ["{{ z }}"]}, {"y": 1})
    assert missing.value.names == ["x", "z"]
    with pytest.raises(TemplateProblem) as bad:
        variables_of({"payload": {"body": ["ok", "{{ unclosed"]}})
    assert bad.value.path == ("payload", "body", 1)
    with pytest.raises(TemplateProblem) as lacking:
        render_tree({"s": "{{ account.missing }}"}, {"account": {}})
    assert lacking.value.path == ("s",) and "missing" in lacking.value.message
    with pytest.raises(TemplateProblem):  # the sandbox keeps templates away from Python internals
        render_tree({"s": "{{ x.__class__.__mro__ }}"}, {"x": 1})


@pytest.mark.parametrize("expression", ["* * * * *", "0 9 * * MON-FRI", "*/15 8-18 * * 1-5", "0 0 1,15 * ?",
                                        "30 2 * JAN,JUL SUN", "0 0 * * 7", "@daily", "  5   4 * * * "])
def test_valid_cron(expression):
    assert check_cron(expression)


@pytest.mark.parametrize("expression, reason", [
    ("", "empty"), ("* * * *", "5 fields"), ("* * * * * *", "5 fields"), ("60 * * * *", "minute: 60"),
    ("* 24 * * *", "hour"), ("* * 0 * *", "day of month"), ("* * * 13 *", "month"), ("* * * * 8", "day of week"),
    ("*/0 * * * *", "step"), ("5-1 * * * *", "backwards"), ("? * * * *", "'?'"), ("* * * FOO *", "FOO"),
    ("@often", "macro"), ("a b c d e", "minute"),
])
def test_invalid_cron_says_why(expression, reason):
    with pytest.raises(InvalidCron) as err:
        check_cron(expression)
    assert reason in str(err.value)


def test_time_zones():
    assert check_timezone("Europe/Paris") == "Europe/Paris"
    for bad in ("Mars/Olympus", "../../etc/passwd", ""):
        with pytest.raises(InvalidCron):
            check_timezone(bad)
