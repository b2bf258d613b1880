"""`gateway ringside-register`: the webhook endpoint and its once-shown secret, against a fake Ringside."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.app.cli_runner import cli_env, gateway, json_out, sqlite_store
from tests.fakes.ringside_server import FAKE_RINGSIDE_KEY, FakeRingside

GATEWAY_URL = "https://billing.example.com/webhooks/ringside"


def ringside_env(ringside: FakeRingside, tmp_path: Path, **values: str) -> dict[str, str | None]:
    defaults = {
        "RINGSIDE_API_KEY": FAKE_RINGSIDE_KEY,
        "RINGSIDE_API_BASE": ringside.url,
        "GATEWAY_STORE": sqlite_store(tmp_path / "gateway.db"),
    }
    return cli_env(**{**defaults, **values})


def test_register_posts_url_and_events_with_the_bearer_key(fake_ringside: FakeRingside, tmp_path: Path) -> None:
    result = gateway("ringside-register", "--url", GATEWAY_URL, env=ringside_env(fake_ringside, tmp_path))

    assert result.exit_code == 0, result.output
    [post] = fake_ringside.posts()
    assert post.path == "/v1/webhook_endpoints"
    assert post.headers["authorization"] == f"Bearer {FAKE_RINGSIDE_KEY}"
    assert post.body == {
        "url": GATEWAY_URL,
        "events": ["chat.completion.finished"],
        "description": "ringside-stripe-gateway",
    }
    assert fake_ringside.invalid_requests == []
    [endpoint] = fake_ringside.endpoints
    assert endpoint["id"] in result.stdout


def test_register_prints_secret_with_a_warning_when_no_secret_file(fake_ringside: FakeRingside, tmp_path: Path) -> None:
    result = gateway("ringside-register", "--url", GATEWAY_URL, env=ringside_env(fake_ringside, tmp_path))

    secret = fake_ringside.endpoints[0]["secret"]
    assert f"RINGSIDE_WEBHOOK_SECRETS={secret}" in result.stdout
    assert "shows this signing secret once" in result.stderr
    assert secret not in result.stderr


def test_register_writes_secret_to_a_new_file_with_mode_0600(fake_ringside: FakeRingside, tmp_path: Path) -> None:
    secret_file = tmp_path / "ringside-secret"

    result = gateway(
        "ringside-register",
        "--url",
        GATEWAY_URL,
        "--secret-file",
        str(secret_file),
        env=ringside_env(fake_ringside, tmp_path),
    )

    assert result.exit_code == 0, result.output
    secret = fake_ringside.endpoints[0]["secret"]
    assert secret_file.read_text() == secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret not in result.output
    assert f'RINGSIDE_WEBHOOK_SECRETS="$(cat {secret_file})"' in result.stdout


def test_register_refuses_existing_secret_file_before_calling_ringside(
    fake_ringside: FakeRingside, tmp_path: Path
) -> None:
    secret_file = tmp_path / "ringside-secret"
    secret_file.write_text("whsec_the_live_one")

    result = gateway(
        "ringside-register",
        "--url",
        GATEWAY_URL,
        "--secret-file",
        str(secret_file),
        env=ringside_env(fake_ringside, tmp_path),
    )

    assert result.exit_code == 1
    assert "already exists" in result.stderr
    assert fake_ringside.requests == []
    assert secret_file.read_text() == "whsec_the_live_one"


def test_register_falls_back_to_v1_webhooks_when_webhook_endpoints_is_404(tmp_path: Path) -> None:
    with FakeRingside(paths=["/v1/webhooks"]) as ringside:
        result = json_out(
            gateway("ringside-register", "--url", GATEWAY_URL, "--json", env=ringside_env(ringside, tmp_path))
        )

        assert [(r.method, r.path, r.status) for r in ringside.posts()] == [
            ("POST", "/v1/webhook_endpoints", 404),
            ("POST", "/v1/webhooks", 200),
        ]
        [endpoint] = ringside.endpoints
        assert result["created_with"] == "POST /v1/webhooks"
        assert (result["id"], result["secret"]) == (endpoint["id"], endpoint["secret"])
        assert ringside.invalid_requests == []


def test_register_fails_naming_the_api_base_when_both_paths_are_404(tmp_path: Path) -> None:
    with FakeRingside(paths=[]) as ringside:
        result = gateway("ringside-register", "--url", GATEWAY_URL, env=ringside_env(ringside, tmp_path))

    assert result.exit_code == 1
    assert "RINGSIDE_API_BASE" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_register_fails_without_writing_a_file_when_the_key_is_refused(
    fake_ringside: FakeRingside, tmp_path: Path
) -> None:
    secret_file = tmp_path / "ringside-secret"
    env = ringside_env(fake_ringside, tmp_path, RINGSIDE_API_KEY="rs_revoked")

    result = gateway("ringside-register", "--url", GATEWAY_URL, "--secret-file", str(secret_file), env=env)

    assert result.exit_code == 1
    assert "Ringside refused RINGSIDE_API_KEY: 401 invalid_api_key" in result.stderr
    assert "rs_revoked" not in result.output
    assert not secret_file.exists()
    assert fake_ringside.endpoints == []


def test_register_reports_ringside_refusal_of_the_url(fake_ringside: FakeRingside, tmp_path: Path) -> None:
    result = gateway(
        "ringside-register", "--url", "http://insecure.example.com", env=ringside_env(fake_ringside, tmp_path)
    )

    assert result.exit_code == 1
    assert "400 invalid_url: URL must be https." in result.stderr


def test_register_refuses_a_second_endpoint_for_the_same_url_unless_forced(
    fake_ringside: FakeRingside, tmp_path: Path
) -> None:
    env = ringside_env(fake_ringside, tmp_path)
    gateway("ringside-register", "--url", GATEWAY_URL, env=env)

    again = gateway("ringside-register", "--url", GATEWAY_URL, env=env)
    forced = gateway("ringside-register", "--url", GATEWAY_URL, "--force", env=env)

    assert again.exit_code == 1
    assert f"already registered with Ringside as {fake_ringside.endpoints[0]['id']}" in again.stderr
    assert forced.exit_code == 0, forced.output
    assert len(fake_ringside.endpoints) == 2


def test_register_appends_the_webhook_path_and_takes_several_events(
    fake_ringside: FakeRingside, tmp_path: Path
) -> None:
    result = gateway(
        "ringside-register",
        "--url",
        "https://billing.example.com",
        "--events",
        "chat.completion.finished,run.completed",
        "--events",
        "budget.exceeded",
        "--json",
        env=ringside_env(fake_ringside, tmp_path),
    )

    assert json.loads(result.stdout)["url"] == GATEWAY_URL
    assert fake_ringside.posts()[0].body["events"] == ["chat.completion.finished", "run.completed", "budget.exceeded"]


def test_register_fails_with_one_line_when_api_key_is_missing(tmp_path: Path) -> None:
    result = gateway("ringside-register", "--url", GATEWAY_URL, env=cli_env())

    assert result.exit_code == 1
    assert "RINGSIDE_API_KEY is not set" in result.stderr
