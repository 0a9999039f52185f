"""Masking: both forms libpq reads, and what cannot be read."""

import pytest

from dbswap import mask_conninfo, redact


@pytest.mark.parametrize("raw, masked", [
    ("postgresql://app:pw@db:5432/app", "postgresql://app:****@db:5432/app"),
    ("postgres://app:p@ss/w@db/app", "postgres://app:****@db/app"),
    ("postgresql://app@db/app", "postgresql://app@db/app"),
    ("postgresql://db/app?user=a&password=pw&sslmode=require",
     "postgresql://db/app?user=a&password=****&sslmode=require"),
    ("host=db password=pw user=app", "host=db password=**** user=app"),
    ("host=db password = 'it\\'s a pw' user=app",
     "host=db password = **** user=app"),
    ("host=db sslpassword=k", "host=db sslpassword=****"),
    ("host=db password='unterminated", "****"),
    ("just-a-password", "****"),
    ("", ""),
    (None, "(none)"),
])
def test_mask(raw, masked):
    assert mask_conninfo(raw) == masked


def test_redact_finds_the_secret_in_any_form():
    ci = "postgresql://app:p%40ss%2Fx@db/app"
    text = (f"could not connect with {ci}: password p@ss/x was refused "
            f"(p%40ss%2Fx)")
    out = redact(text, ci)
    assert "p@ss/x" not in out and "p%40ss%2Fx" not in out
    assert "postgresql://app:****@db/app" in out


def test_redact_keyvalue():
    ci = "host=db user=app password='a b c'"
    assert "a b c" not in redact("FATAL: a b c rejected", ci)
