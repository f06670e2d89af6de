"""Bot users from Telegram senders, the welcome bonus, and referral rules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import bot_user_create, project_create
from tests.users.helpers import run_in_threads
from users.botusers import bot_user_upsert
from users.models import BonusTransaction, BotUser
from users.referrals import referral_apply, referral_reward_grant
from users.selectors import referral_link_build


def upsert(project, telegram_id=111, **fields):
    fields.setdefault("chat_id", telegram_id)
    return bot_user_upsert(project_id=project.pk, telegram_id=telegram_id, **fields)


# --- bot_user_upsert ---------------------------------------------------------------


def test_first_message_creates_the_user_at_the_base_level(project):
    user, created = upsert(project, username="ann", first_name="Ann", language_code="lv")
    assert created
    user.refresh_from_db()
    assert (user.username, user.first_name, user.language_code) == ("ann", "Ann", "lv")
    assert (user.level, user.balance, user.referral_code != "") == ("Bronze", 0, True)
    again, created_again = upsert(project, username="ann", first_name="Ann", language_code="lv")
    assert (again.pk, created_again) == (user.pk, False)


def test_known_user_with_unchanged_profile_costs_one_query(project):
    upsert(project, first_name="Ann")
    with CaptureQueriesContext(connection) as queries:
        upsert(project, first_name="Ann")
    assert len(queries) == 1


def test_changed_profile_is_written_and_an_old_last_seen_refreshed(project):
    user, _ = upsert(project, first_name="Ann")
    an_hour_ago = timezone.now() - timedelta(hours=1)
    BotUser.objects.filter(pk=user.pk).update(last_seen_at=an_hour_ago)
    upsert(project, first_name="Ann")
    user.refresh_from_db()
    assert user.last_seen_at > an_hour_ago + timedelta(minutes=59)

    with CaptureQueriesContext(connection) as queries:
        renamed, _ = upsert(project, first_name="Anna", username="anna", chat_id=999)
    assert any(q["sql"].startswith("UPDATE") for q in queries)
    assert (renamed.first_name, renamed.username, renamed.chat_id) == ("Anna", "anna", 999)
    user.refresh_from_db()
    assert (user.first_name, user.username, user.chat_id) == ("Anna", "anna", 999)


def test_last_seen_is_stamped_at_most_once_per_resolution(project, settings):
    """A chatty member costs no write per message (USER_LAST_SEEN_RESOLUTION_SECONDS)."""
    settings.USER_LAST_SEEN_RESOLUTION_SECONDS = 300
    user, _ = upsert(project, first_name="Ann")
    four_minutes_ago = timezone.now() - timedelta(minutes=4)
    BotUser.objects.filter(pk=user.pk).update(last_seen_at=four_minutes_ago)
    with CaptureQueriesContext(connection) as queries:
        upsert(project, first_name="Ann")
    assert not any(q["sql"].startswith("UPDATE") for q in queries)
    user.refresh_from_db()
    assert user.last_seen_at == four_minutes_ago

    six_minutes_ago = timezone.now() - timedelta(minutes=6)
    BotUser.objects.filter(pk=user.pk).update(last_seen_at=six_minutes_ago)
    upsert(project, first_name="Ann")
    user.refresh_from_db()
    assert user.last_seen_at > six_minutes_ago + timedelta(minutes=5)


def test_overlong_names_are_truncated_not_rejected(project):
    user, _ = upsert(project, first_name="x" * 500, username="u" * 100)
    user.refresh_from_db()
    assert (len(user.first_name), len(user.username)) == (128, 64)


def test_a_user_who_writes_again_is_no_longer_blocked(project):
    user, _ = upsert(project)
    BotUser.objects.filter(pk=user.pk).update(is_blocked=True)
    upsert(project)
    user.refresh_from_db()
    assert user.is_blocked is False


def test_welcome_bonus_is_granted_once_to_a_new_user(db):
    project = project_create(welcome_bonus=25)
    user, _ = upsert(project)
    assert user.balance == 25
    upsert(project)
    upsert(project, first_name="changed")
    entries = BonusTransaction.objects.filter(user=user)
    assert [(e.kind, e.amount, e.idempotency_key) for e in entries] == [
        ("earn", 25, f"welcome:{user.pk}")
    ]
    user.refresh_from_db()
    assert (user.balance, user.lifetime_earned) == (25, 25)


def test_no_welcome_entry_when_the_bonus_is_zero(project):
    upsert(project)
    assert not BonusTransaction.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_messages_create_one_user_with_one_welcome_bonus():
    project = project_create(welcome_bonus=10)
    results = run_in_threads(lambda i: upsert(project, telegram_id=777), 10)
    assert all(isinstance(r, tuple) for r in results), results
    assert sum(created for _, created in results) == 1
    assert len({user.pk for user, _ in results}) == 1
    user = BotUser.objects.get(project=project, telegram_id=777)
    assert user.balance == 10
    assert BonusTransaction.objects.filter(user=user).count() == 1


# --- referrals ---------------------------------------------------------------------


def test_referral_sets_the_referrer_and_rewards_once(project):
    referrer = bot_user_create(project=project)
    invited = bot_user_create(project=project)
    assert referral_apply(user=invited, code=f"ref_{referrer.referral_code}") is True
    assert invited.referrer_id == referrer.pk
    invited.refresh_from_db()
    referrer.refresh_from_db()
    assert invited.referrer_id == referrer.pk
    assert (referrer.balance, referrer.lifetime_earned) == (50, 50)
    entry = BonusTransaction.objects.get(user=referrer)
    assert (entry.kind, entry.idempotency_key) == ("referral", f"referral:{invited.pk}")

    # Again: the same link, a retried reward, a fresh object: nothing more is paid.
    assert referral_apply(user=invited, code=referrer.referral_code) is False
    assert referral_apply(user=BotUser.objects.get(pk=invited.pk), code=referrer.referral_code) is (
        False
    )
    replay = referral_reward_grant(invited_user_id=invited.pk)
    assert replay.replayed
    referrer.refresh_from_db()
    assert referrer.balance == 50
    assert BonusTransaction.objects.count() == 1


def test_referrer_is_never_reassigned(project):
    first = bot_user_create(project=project)
    second = bot_user_create(project=project)
    invited = bot_user_create(project=project)
    assert referral_apply(user=invited, code=first.referral_code)
    stale = BotUser.objects.get(pk=invited.pk)
    stale.referrer_id = None  # a stale copy must not let a second referrer in
    assert referral_apply(user=stale, code=second.referral_code) is False
    invited.refresh_from_db()
    assert invited.referrer_id == first.pk
    assert BonusTransaction.objects.filter(user=second).count() == 0


def test_own_code_is_refused(project):
    user = bot_user_create(project=project)
    assert referral_apply(user=user, code=f"ref_{user.referral_code}") is False
    user.refresh_from_db()
    assert user.referrer_id is None and user.balance == 0


def test_cycles_are_refused(project):
    a, b, c = (bot_user_create(project=project) for _ in range(3))
    assert referral_apply(user=a, code=b.referral_code)  # b invited a
    assert referral_apply(user=b, code=a.referral_code) is False  # a -> b -> a
    assert referral_apply(user=b, code=c.referral_code)  # c invited b
    assert referral_apply(user=c, code=a.referral_code) is False  # a -> b -> c -> a
    c.refresh_from_db()
    assert c.referrer_id is None


def test_unknown_empty_and_foreign_codes_are_refused(project):
    user = bot_user_create(project=project)
    elsewhere = bot_user_create(project=project_create())
    for code in ("", "ref_", "nope", "ref_nope", elsewhere.referral_code):
        assert referral_apply(user=user, code=code) is False
    assert not BonusTransaction.objects.exists()


def test_simulator_test_users_and_real_users_never_refer_each_other(project):
    real = bot_user_create(project=project)
    tester = bot_user_create(project=project, is_test=True, telegram_id=-(10**15) - 1)
    assert referral_apply(user=real, code=tester.referral_code) is False
    assert referral_apply(user=tester, code=real.referral_code) is False
    assert not BonusTransaction.objects.exists()
    other_tester = bot_user_create(project=project, is_test=True, telegram_id=-(10**15) - 2)
    assert referral_apply(user=other_tester, code=tester.referral_code) is True


def test_only_a_newly_arrived_user_can_be_referred(project):
    referrer = bot_user_create(project=project)
    veteran = bot_user_create(project=project)
    BotUser.objects.filter(pk=veteran.pk).update(first_seen_at=timezone.now() - timedelta(days=3))
    assert referral_apply(user=veteran, code=referrer.referral_code) is False


def test_zero_reward_sets_the_referrer_without_an_entry(db):
    project = project_create(referral_reward=0)
    referrer = bot_user_create(project=project)
    invited = bot_user_create(project=project)
    assert referral_apply(user=invited, code=referrer.referral_code)
    assert not BonusTransaction.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_mutual_referrals_cannot_build_a_cycle():
    project = project_create()
    for _ in range(5):
        a = bot_user_create(project=project)
        b = bot_user_create(project=project)
        pair = [(a, b), (b, a)]
        results = run_in_threads(
            lambda i, pair=pair: referral_apply(user=pair[i][0], code=pair[i][1].referral_code), 2
        )
        assert sorted(results) == [False, True], results
        a.refresh_from_db()
        b.refresh_from_db()
        assert (a.referrer_id == b.pk) != (b.referrer_id == a.pk)
    assert BonusTransaction.objects.filter(kind="referral").count() == 5


@pytest.mark.django_db(transaction=True)
def test_one_user_opening_many_links_at_once_gets_one_referrer():
    project = project_create()
    referrers = [bot_user_create(project=project) for _ in range(8)]
    invited = bot_user_create(project=project)
    results = run_in_threads(
        lambda i: referral_apply(
            user=BotUser.objects.get(pk=invited.pk), code=referrers[i].referral_code
        ),
        8,
    )
    assert results.count(True) == 1, results
    assert BonusTransaction.objects.filter(kind="referral").count() == 1


def test_referral_link():
    assert referral_link_build(bot_username="@shop_bot", referral_code="abc") == (
        "https://t.me/shop_bot?start=ref_abc"
    )
