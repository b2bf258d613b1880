"""The logs of a real `gateway serve` at debug level: every line is JSON, and no secret value is in any of them.

One run exercises what could leak: signed deliveries (accepted, forged, malformed), a Stripe failure and its retry,
the dispatcher's calls, and portal calls with a good token in the header, a token in the URL, and bad tokens.
Then every line is parsed, and the whole text is searched for every secret the run used: the webhook secrets,
the Stripe key, the portal's JWT secret, each JWT, each signature, and each portal session URL.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import jwt
import msgspec
import pytest

from gateway.adapters.sqlite import SqliteCustomers, SqliteDatabase
from gateway.domain.signature import sign
from tests.builders import OLD_SECRET, SECRET, event
from tests.e2e.process import GatewayProcess
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe

pytestmark = pytest.mark.slow

PORTAL_SECRET = "portal-jwt-secret-for-the-log-test-" + "9" * 32
ALICE, ALICE_STRIPE = "cust_LOG_ALICE", "cus_LOG_ALICE"


def _token(sub: str, *, ttl: int = 120, secret: str = PORTAL_SECRET) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + ttl}, secret, algorithm="HS256")


async def test_no_secret_value_appears_in_any_log_line(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    store = SqliteDatabase.from_url(f"sqlite:///{database}")
    await SqliteCustomers(store).set(ALICE, ALICE_STRIPE)
    store.close()
    used: list[str] = [SECRET, OLD_SECRET, FAKE_API_KEY, PORTAL_SECRET]

    with FakeStripe(api_key=FAKE_API_KEY) as stripe:
        stripe.fail_next(1, 500)  # one failure, so a retry (with the error's text) is logged
        env = {
            "RINGSIDE_WEBHOOK_SECRETS": f"{SECRET},{OLD_SECRET}",
            "GATEWAY_STORE": f"sqlite:///{database}",
            "STRIPE_API_KEY": FAKE_API_KEY,
            "STRIPE_API_BASE": stripe.url,
            "GATEWAY_RETRY_BASE_S": "0.1",
            "GATEWAY_LOG_LEVEL": "debug",
            "PORTAL_JWT_SECRET": PORTAL_SECRET,
            "PORTAL_RETURN_URL": "https://app.example.com/account",
        }
        gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
                body = msgspec.json.encode(event("evt_LOGGED", customer=ALICE, stripe_customer=None))
                signature = sign(body, SECRET, int(time.time()))
                forged = sign(body, "not-the-secret-at-all", int(time.time()))
                used += [signature, signature.split("v1=")[1], forged.split("v1=")[1]]
                webhook = "/webhooks/ringside"
                accepted = await client.post(webhook, content=body, headers={"X-FC-Signature": signature})
                await client.post(webhook, content=body, headers={"X-FC-Signature": forged})
                await client.post(webhook, content=body, headers={"X-FC-Signature": f"garbage {signature}"})
                await client.post(webhook, content=body, headers={"X-FC-Signature": signature})  # duplicate

                good, linked, expired = _token(ALICE), _token(ALICE, ttl=60), _token(ALICE, ttl=-3600)
                wrong_key = _token(ALICE, secret="another-secret-of-some-host-app-" + "x" * 32)
                used += [good, linked, expired, wrong_key]
                portal = await client.post("/api/portal", headers={"Authorization": f"Bearer {good}"})
                await client.get("/api/portal", params={"token": linked})
                await client.post("/api/portal", headers={"Authorization": f"Bearer {expired}"})
                await client.post("/api/portal", headers={"Authorization": f"Bearer {wrong_key}"})
                await client.post("/api/portal", headers={"Authorization": f"Basic {PORTAL_SECRET}"})

            await asyncio.to_thread(stripe.wait_for_meter_events, 1, 15.0)
            await asyncio.sleep(0.3)
        finally:
            gateway.terminate()
        used += [session["url"] for session in stripe.portal_sessions]

    assert accepted.json()["status"] == "accepted"
    assert portal.status_code == 200 and len(stripe.portal_sessions) == 2
    text = gateway.logs()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    events = {line["event"] for line in lines}
    assert {"webhook.delivery", "webhook.refused", "dispatch.retry_scheduled", "dispatch.delivered"} <= events
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    leaked = [secret for secret in used if secret in text]
    assert leaked == []
