"""Secrets in any config value are refused at plan time and never echoed; plans and configs are masked."""

from __future__ import annotations

import pytest

from ftc import secrets
from tests.conftest import plan_for

pytestmark = pytest.mark.unit

KEY_ID, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
HF = "hf_" + "a1B2c3D4e5" * 4


@pytest.mark.parametrize("bad,key,fixed", [
    pytest.param([f"launcher.storage_path=s3://{KEY_ID}:{SECRET}@bucket/runs"], "launcher.storage_path",
                 ["launcher.storage_path=s3://bucket/runs"], id="uri-userinfo"),
    pytest.param(["data=file", f"data.path=https://host/d.jsonl?X-Amz-Signature={SECRET}&x=1"], "data.path",
                 ["data=file", "data.path=https://host/d.jsonl"], id="signed-url"),
    pytest.param([f"+train.trainer_kwargs.hub_token={HF}"], "train.trainer_kwargs.hub_token", [],
                 id="hub-token"),
    pytest.param(["+train.trainer_kwargs.hub_token=short"], "train.trainer_kwargs.hub_token", [],
                 id="secret-by-name"),
    pytest.param([f"model.revision={KEY_ID}"], "model.revision",
                 ["model.revision=0123456789abcdef0123456789abcdef01234567"], id="aws-key-id-vs-commit"),
])
def test_a_secret_is_refused_naming_its_key_and_never_echoed(bad, key, fixed):
    plan = plan_for(bad)
    errors = [e for e in plan.errors if e.startswith(key + ":")]
    assert errors and "secrets are never stored" in errors[0] and "environment" in errors[0], plan.errors
    everything = plan.to_json() + "\n".join(plan.errors + plan.warnings + plan.decisions)
    assert SECRET not in everything and KEY_ID not in everything and HF not in everything
    assert not [e for e in plan_for(fixed).errors if e.startswith(key + ":")]


def test_mask_keeps_what_is_not_secret():
    assert secrets.mask(f"s3://{KEY_ID}:{SECRET}@bucket/runs") == "s3://***@bucket/runs"
    assert secrets.mask(f'Invalid bucket name "{KEY_ID}:{SECRET}@bucket"') == 'Invalid bucket name "***@bucket"'
    assert secrets.mask("https://h/x?a=1&token=abc&b=2") == "https://h/x?a=1&token=***&b=2"
    assert secrets.mask("s3://bucket/runs user@example.com") == "s3://bucket/runs user@example.com"
    masked = secrets.mask_all({"hub_token": "x", "max_new_tokens": 64, "path": "gs://u:p@b/x"})
    assert masked == {"hub_token": "***", "max_new_tokens": 64, "path": "gs://***@b/x"}


TOKEN = "ghp_" + "Z9y8X7w6V5" * 4


@pytest.mark.parametrize("text,secret", [
    pytest.param(f"https://{TOKEN}@github.com/org/data.git", TOKEN, id="token-as-uri-user"),
    pytest.param("https://host/d.jsonl?Authorization=Bearer%20abcdefgh12345678", "abcdefgh12345678",
                 id="authorization-query"),
    pytest.param("curl -H 'Authorization: Bearer abcdefgh12345678'", "abcdefgh12345678", id="bearer-header"),
    pytest.param("s3://alice:pass/word9@bucket/runs", "pass/word9", id="password-with-slash"),
    pytest.param(r"data.path=s3\://alice\:pass/word9@bucket/d.jsonl", "pass/word9", id="hydra-escaped-override"),
    pytest.param("sftp://bob:s3cr3t@host/d.jsonl", "s3cr3t", id="any-uri-scheme"),
])
def test_every_form_of_secret_is_masked(text, secret):
    assert secret not in secrets.mask(text) and secrets.MASK in secrets.mask(text) and secrets.find(text)


def test_the_value_of_a_secret_named_environment_variable_is_masked_wherever_it_appears(monkeypatch):
    """A value put into the config with ${oc.env:...} is refused at plan; echoed by anything, it is masked."""
    value = "env-secret-value-0123"
    monkeypatch.setenv("MY_SERVICE_API_KEY", value)
    monkeypatch.setenv("MY_LOG_LEVEL", "verbose-logging-please")  # not a secret by its name
    assert secrets.mask(f"connecting with {value} now") == "connecting with *** now"
    assert secrets.mask("verbose-logging-please") == "verbose-logging-please"
    errors = [e for e in plan_for(["name=${oc.env:MY_SERVICE_API_KEY}"]).errors if e.startswith("name:")]
    assert errors and value not in errors[0]


def test_the_console_and_the_log_records_are_masked(capsys):
    import logging

    with secrets.masked_console():
        import sys

        print(f"Error executing job with overrides: ['data.path=https://{TOKEN}@host/d.jsonl']")
        sys.stderr.write(f"token={TOKEN}\n")
    out, err = capsys.readouterr()
    assert TOKEN not in out + err and "https://***@host" in out
    record = logging.LogRecord("x", logging.WARNING, "f", 1, "pushing to %s", (f"https://{TOKEN}@host/",), None)
    assert secrets.MaskedRecords().filter(record) and TOKEN not in record.getMessage()
