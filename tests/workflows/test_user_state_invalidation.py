"""One invalidation of a user's cached state, used by every writer (the simulator too)."""

from __future__ import annotations

from django.core.cache import cache

from botplatform.cache import user_state_generation_key
from users import selectors
from users.selectors import _state_load, _states_store, user_state_get
from workflows.simulator import simulator_archived_id, simulator_reset, simulator_user_get


def test_a_reader_that_loaded_before_a_simulator_reset_cannot_cache_the_old_user(
    project, django_user_model, django_capture_on_commit_callbacks
):
    """The race the generation token closes: load, (reset + invalidate), store the old
    copy. A reset that only deleted the keys let the old copy be served afterwards."""
    operator = django_user_model.objects.create_user("ann", is_staff=True)
    user = simulator_user_get(project_id=project.pk, operator=operator)
    generation = cache.get(user_state_generation_key(user.pk, project.pk))
    profile, variables = _state_load(user_id=user.pk)

    with django_capture_on_commit_callbacks(execute=True):
        simulator_reset(user=user)
    _states_store([(user.pk, project.pk, generation, profile, variables)])

    after = user_state_get(user_id=user.pk, project_id=project.pk)
    assert after.profile["telegram_id"] == simulator_archived_id(user.pk)


def test_selectors_only_read_the_cache():
    """A selector never writes: the invalidation lives with the writers (users.invalidation)."""
    assert not hasattr(selectors, "user_state_cache_clear")
    from botplatform import cache as keys

    assert not hasattr(keys, "user_state_invalidate")  # the second, generation-less way
