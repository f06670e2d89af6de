#!/usr/bin/env bash
# One command from a fresh clone to a running product on the embedded default
# (SQLite file, in-process cache, in-process tasks): virtualenv, install, migrate,
# demo admin account and demo project, then the development server.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PORT=${PORT:-8000}
ADMIN_USER=${ADMIN_USER:-admin}
ADMIN_PASSWORD=${ADMIN_PASSWORD:-admin-demo-password}

if [ ! -x .venv/bin/python ]; then
  echo "==> Creating the virtualenv in .venv"
  "$PYTHON" -m venv .venv
fi
echo "==> Installing requirements"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt

export DEBUG=${DEBUG:-true}
echo "==> Migrating the database"
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py ensureadmin --username "$ADMIN_USER" --password "$ADMIN_PASSWORD"
if .venv/bin/python manage.py help loaddemo >/dev/null 2>&1; then
  echo "==> Loading the demo loyalty project"
  .venv/bin/python manage.py loaddemo ${TELEGRAM_BOT_TOKEN:+--token "$TELEGRAM_BOT_TOKEN"}
fi

cat <<MSG

  Bot platform is starting.
    Admin:    http://127.0.0.1:${PORT}/admin/
    Username: ${ADMIN_USER}
    Password: ${ADMIN_PASSWORD}
    Health:   http://127.0.0.1:${PORT}/healthz

MSG
exec .venv/bin/python manage.py runserver "127.0.0.1:${PORT}"
