"""The operators' admin for workflows, one module per screen.

Thin: every view parses the request, checks the operator may touch the object (via
the scoped ``get_object`` / ``project_or_404``, so another project's ids give 404),
calls one service, and renders. Importing the package registers every screen.
"""

from workflows.admin import broadcasts, executions, versions, webhooks, workflow  # noqa: F401
