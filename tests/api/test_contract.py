"""The API's contract: every endpoint, its errors and its scopes, and project isolation."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.api.helpers import Api, api_for, customer, project_with_rules
from users.apikeys import apikey_revoke
from users.models import BonusTransaction, BotUser
from users.models_pos import ApiKey, Hold, Purchase

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return project_with_rules()


@pytest.fixture
def api(project):
    return api_for(project)


def _assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# --- authentication, scopes, isolation ------------------------------------------------


def test_no_key_is_401(project):
    _assert_error(Api(None).get("customers", {"phone": "+4915112345678"}), 401, "unauthorized")


def test_a_wrong_or_malformed_key_is_401(project):
    _assert_error(Api("bp_nope_nope").get("customers/1"), 401, "unauthorized")
    response = Api(None).get("customers/1", headers={"Authorization": "Basic abc"})
    _assert_error(response, 401, "unauthorized")


def test_a_revoked_key_is_401(project, api):
    apikey_revoke(ApiKey.objects.get(project=project))
    _assert_error(api.get("customers/1"), 401, "unauthorized")


def test_the_key_records_when_it_was_last_used(project, api):
    user = customer(project)
    assert api.get(f"customers/{user.pk}").status_code == 200
    assert ApiKey.objects.get(project=project).last_used_at is not None


def test_the_key_is_stored_hashed(project):
    api = api_for(project)
    stored = ApiKey.objects.get(project=project)
    assert api.key not in (stored.key_hash, stored.prefix)
    assert api.key.startswith(stored.prefix)


@pytest.mark.parametrize(
    "scopes, method, path, body",
    [
        ("accrue", "get", "customers/{id}", None),
        ("accrue", "get", "customers/{id}/history", None),
        ("read", "post", "purchases", {"customer_id": 1, "order_id": "o1", "amount": "1"}),
        ("read", "post", "refunds", {"order_id": "o1", "refund_id": "r1"}),
        ("read", "post", "customers", {"phone": "+4915112345678"}),
        ("accrue", "post", "holds", {"customer_id": 1, "amount": 1}),
        ("read", "post", "holds/1/confirm", {}),
        ("read", "post", "holds/1/release", {}),
        ("read", "get", "holds/1", None),
        ("read,accrue,redeem", "post", "customers/{id}/events", {"name": "x"}),
    ],
)
def test_each_endpoint_needs_its_scope(project, scopes, method, path, body):
    user = customer(project)
    api = api_for(project, scopes)
    path = path.format(id=user.pk)
    response = api.get(path) if method == "get" else api.post(path, body)
    _assert_error(response, 403, "forbidden")


def test_a_foreign_projects_key_sees_nothing(project, api):
    user = customer(project, balance=100, phone="+4915112345678")
    other = api_for(project_with_rules())
    _assert_error(other.get(f"customers/{user.pk}"), 404, "customer_not_found")
    _assert_error(other.get("customers", {"phone": "+4915112345678"}), 404, "customer_not_found")
    _assert_error(other.get(f"customers/{user.pk}/history"), 404, "customer_not_found")
    body = {"customer_id": user.pk, "order_id": "A1", "amount": "100.00"}
    _assert_error(other.post("purchases", body), 404, "customer_not_found")
    _assert_error(
        other.post("holds", {"customer_id": user.pk, "amount": 10}), 404, "customer_not_found"
    )
    assert api.post("purchases", body).status_code == 201
    _assert_error(
        other.post("refunds", {"order_id": "A1", "refund_id": "r"}), 404, "purchase_not_found"
    )
    hold = api.post("holds", {"customer_id": user.pk, "amount": 10}).json()
    _assert_error(other.get(f"holds/{hold['id']}"), 404, "not_found")
    _assert_error(other.post(f"holds/{hold['id']}/confirm"), 404, "hold_not_found")
    _assert_error(other.post(f"holds/{hold['id']}/release"), 404, "hold_not_found")
    assert Hold.objects.get(pk=hold["id"]).status == "held"


def test_the_rate_limit_answers_429(project):
    api = api_for(project, "read")
    ApiKey.objects.filter(project=project).update(rate_limit_per_minute=3)
    user = customer(project)
    codes = [api.get(f"customers/{user.pk}").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200]
    response = api.get(f"customers/{user.pk}")
    _assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1


# --- customers --------------------------------------------------------------------------


def test_lookup_by_phone_telegram_id_and_card_code(project, api):
    user = customer(project, phone="+4915112345678", card_code="123456789012")
    for params in (
        {"phone": "+4915112345678"},
        {"phone": " 4915112345678"},  # a + sent unencoded arrives as a space
        {"telegram_id": str(user.telegram_id)},
        {"card_code": "1234 5678 9012"},
    ):
        response = api.get("customers", params)
        assert response.status_code == 200, (params, response.content)
        assert response.json()["id"] == user.pk


def test_lookup_errors(project, api):
    _assert_error(api.get("customers"), 400, "invalid")
    _assert_error(api.get("customers", {"phone": "+1", "card_code": "1"}), 400, "invalid")
    _assert_error(api.get("customers", {"phone": "hello"}), 400, "invalid_phone")
    _assert_error(api.get("customers", {"card_code": "12"}), 400, "invalid_card_code")
    _assert_error(api.get("customers", {"telegram_id": "-5"}), 400, "invalid")
    _assert_error(api.get("customers", {"phone": "+4915112345678"}), 404, "customer_not_found")


def test_create_a_customer_at_the_till(project, api):
    response = api.post("customers", {"phone": "+49 151 1234 5678", "first_name": "Ann"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["phone"] == "+4915112345678"
    assert body["telegram_id"] is None and body["source"] == "till"
    assert len(body["card_code"]) == 12
    again = api.post("customers", {"phone": "+4915112345678"})
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    _assert_error(api.post("customers", {"phone": "0151"}), 400, "invalid_phone")
    _assert_error(api.post("customers", {}), 400, "invalid")


def test_read_a_customer_and_page_through_history(project, api):
    user = customer(project, balance=100)
    for i in range(25):
        api.post("purchases", {"customer_id": user.pk, "order_id": f"o{i}", "amount": "20"})
    body = api.get(f"customers/{user.pk}").json()
    assert body["balance"] == 100 + 25 and body["available"] == 125
    first = api.get(f"customers/{user.pk}/history").json()
    assert first["count"] == 26 and len(first["results"]) == 20 and first["next"]
    second = api.get(f"customers/{user.pk}/history", {"page": 2}).json()
    assert len(second["results"]) == 6 and second["results"][-1]["amount"] == 100
    _assert_error(api.get(f"customers/{user.pk}/history", {"page": 9}), 404, "not_found")
    _assert_error(api.get("customers/999999999"), 404, "customer_not_found")


# --- purchases and refunds ----------------------------------------------------------------


def test_a_purchase_earns_by_the_rules_once_per_order(project, api):
    user = customer(project)
    body = {
        "customer_id": user.pk,
        "order_id": "R-1",
        "amount": "199.99",
        "currency": "EUR",
        "items": [{"sku": "A", "name": "Tea", "quantity": "2", "price": "99.995"}],
    }
    _assert_error(api.post("purchases", body), 400, "invalid")  # 3 decimals in a price
    body["items"][0]["price"] = "99.99"
    first = api.post("purchases", body)
    assert first.status_code == 201, first.content
    assert first.json()["accrued"] == 9 and first.json()["balance"] == 9  # 5 % rounded down
    again = api.post("purchases", body)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert BonusTransaction.objects.filter(user=user, kind="earn").count() == 1
    _assert_error(api.post("purchases", {**body, "amount": "5"}), 409, "order_conflict")


def test_purchase_validation(project, api):
    user = customer(project)
    base = {"customer_id": user.pk, "order_id": "X", "amount": "10"}
    _assert_error(api.post("purchases", {**base, "amount": "-1"}), 400, "invalid")
    _assert_error(api.post("purchases", {**base, "amount": "NaN"}), 400, "invalid")
    _assert_error(api.post("purchases", {**base, "currency": "eu"}), 400, "invalid")
    _assert_error(api.post("purchases", {**base, "currency": "eur"}), 400, "invalid")
    _assert_error(api.post("purchases", {**base, "order_id": " bad"}), 400, "invalid")
    _assert_error(api.post("purchases", "{not json"), 400, "malformed_json")
    _assert_error(api.post("purchases", {**base, "customer_id": 10**12}), 404, "customer_not_found")


def test_refunds_claw_back_in_parts_and_never_below_zero(project, api):
    user = customer(project)
    api.post("purchases", {"customer_id": user.pk, "order_id": "R", "amount": "1000"})  # +50
    part = api.post("refunds", {"order_id": "R", "refund_id": "r1", "amount": "400"})
    assert part.status_code == 201, part.content
    assert part.json()["taken"] == 20 and part.json()["balance"] == 30
    assert (
        api.post("refunds", {"order_id": "R", "refund_id": "r1", "amount": "400"}).status_code
        == 200
    )
    _assert_error(
        api.post("refunds", {"order_id": "R", "refund_id": "r1", "amount": "1"}),
        409,
        "refund_conflict",
    )
    _assert_error(
        api.post("refunds", {"order_id": "R", "refund_id": "r2", "amount": "700"}),
        409,
        "refund_too_large",
    )
    hold = api.post("holds", {"customer_id": user.pk, "amount": 25}).json()
    assert api.post(f"holds/{hold['id']}/confirm").status_code == 200  # spends 25 of 30
    rest = api.post("refunds", {"order_id": "R", "refund_id": "r2"})  # the other 600: 30 due
    assert rest.status_code == 201
    assert (rest.json()["clawback"], rest.json()["taken"], rest.json()["shortfall"]) == (30, 5, 25)
    assert BotUser.objects.get(pk=user.pk).balance == 0
    purchase = Purchase.objects.get(order_id="R")
    assert (purchase.clawed_back, purchase.shortfall) == (25, 25)
    _assert_error(
        api.post("refunds", {"order_id": "R", "refund_id": "r3"}), 409, "refund_too_large"
    )
    _assert_error(
        api.post("refunds", {"order_id": "nope", "refund_id": "r"}), 404, "purchase_not_found"
    )


# --- holds ----------------------------------------------------------------------------------


def test_hold_confirm_release(project, api):
    user = customer(project, balance=100)
    hold = api.post("holds", {"customer_id": user.pk, "amount": 60, "store": "Store 5"})
    assert hold.status_code == 201, hold.content
    assert api.get(f"customers/{user.pk}").json()["available"] == 40
    _assert_error(
        api.post("holds", {"customer_id": user.pk, "amount": 41}), 409, "insufficient_balance"
    )
    hold_id = hold.json()["id"]
    confirmed = api.post(f"holds/{hold_id}/confirm")
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "confirmed"
    assert api.post(f"holds/{hold_id}/confirm").json()["status"] == "confirmed"  # again: same
    _assert_error(api.post(f"holds/{hold_id}/release"), 409, "hold_not_open")
    assert BotUser.objects.get(pk=user.pk).balance == 40
    second = api.post("holds", {"customer_id": user.pk, "amount": 40}).json()
    released = api.post(f"holds/{second['id']}/release")
    assert released.json()["status"] == "released"
    _assert_error(api.post(f"holds/{second['id']}/confirm"), 409, "hold_not_open")
    assert BotUser.objects.get(pk=user.pk).balance == 40
    assert api.get(f"holds/{second['id']}").json()["status"] == "released"
    _assert_error(api.get("holds/999999"), 404, "not_found")
    _assert_error(api.post("holds", {"customer_id": user.pk, "amount": 0}), 400, "invalid")


def test_an_expired_hold_cannot_be_confirmed_and_the_sweep_frees_it(project, api):
    from users.holds import holds_expire

    user = customer(project, balance=100)
    hold = api.post(
        "holds", {"customer_id": user.pk, "amount": 100, "expires_in_minutes": 1}
    ).json()
    Hold.objects.filter(pk=hold["id"]).update(expires_at=timezone.now())
    assert holds_expire() == 1
    assert Hold.objects.get(pk=hold["id"]).status == "expired"
    _assert_error(api.post(f"holds/{hold['id']}/confirm"), 409, "hold_not_open")
    assert api.get(f"customers/{user.pk}").json()["available"] == 100


def test_customer_approval_is_needed_before_confirm(
    project, api, django_capture_on_commit_callbacks
):
    from users.holds import _approval_senders, approval_sender_register, hold_approve

    asked = []
    approval_sender_register(asked.append)
    try:
        project.hold_approval_required = True
        project.save()
        user = customer(project, balance=100)
        with django_capture_on_commit_callbacks(execute=True):
            hold = api.post("holds", {"customer_id": user.pk, "amount": 30}).json()
        assert hold["approval"] == "pending" and [h.pk for h in asked] == [hold["id"]]
        _assert_error(api.post(f"holds/{hold['id']}/confirm"), 409, "approval_pending")
        hold_approve(hold["id"], True)
        assert api.get(f"holds/{hold['id']}").json()["approval"] == "approved"
        assert api.post(f"holds/{hold['id']}/confirm").json()["status"] == "confirmed"
        declined = api.post("holds", {"customer_id": user.pk, "amount": 30}).json()
        hold_approve(declined["id"], False)
        hold_approve(declined["id"], True)  # a late second answer changes nothing
        _assert_error(api.post(f"holds/{declined['id']}/confirm"), 409, "approval_declined")
        assert BotUser.objects.get(pk=user.pk).balance == 70
    finally:
        _approval_senders.remove(asked.append)


# --- idempotency ----------------------------------------------------------------------------


def test_idempotency_key_replays_and_conflicts(project, api):
    user = customer(project, balance=100)
    body = {"customer_id": user.pk, "amount": 10}
    first = api.post("holds", body, idem="k1")
    again = api.post("holds", body, idem="k1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Hold.objects.filter(customer=user).count() == 1
    _assert_error(
        api.post("holds", {**body, "amount": 11}, idem="k1"), 409, "idempotency_key_reused"
    )
    _assert_error(api.post("holds", body, idem="bad key\x01"), 400, "invalid_idempotency_key")
    # An error is an answer too: the same key replays it.
    failing = {"customer_id": user.pk, "amount": 10**6}
    assert api.post("holds", failing, idem="k2").status_code == 409
    assert api.post("holds", failing, idem="k2")["Idempotent-Replayed"] == "true"


def test_keys_do_not_share_idempotency_records(project, api):
    user = customer(project, balance=100)
    other = api_for(project)
    body = {"customer_id": user.pk, "amount": 10}
    assert api.post("holds", body, idem="same").status_code == 201
    assert other.post("holds", body, idem="same").status_code == 201
    assert Hold.objects.filter(customer=user).count() == 2


# --- the schema and the docs ----------------------------------------------------------------


def test_openapi_and_docs_are_served_offline(client):
    schema = client.get("/api/v1/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/v1/purchases", "/api/v1/holds/{hold_id}/confirm", "/api/v1/refunds"} <= set(paths)
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html and "cdn" not in html.lower() and "//unpkg" not in html
