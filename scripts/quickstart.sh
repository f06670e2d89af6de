#!/usr/bin/env bash
# One command from a fresh clone to a running product: virtualenv, install, database
# (created when DATABASE_URL names a PostgreSQL database that does not exist yet),
# migrate, demo admin account and demo project, then the web admin AND the bot runner
# together. On the embedded default (no REDIS_URL, no broker) the bot runner also runs
# the periodic sweeps (delays, timeouts, scheduled broadcasts, the daily figures).
# Ctrl-C stops both. With TELEGRAM_BOT_TOKEN set the demo bot answers in Telegram.
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
if [ -z "${QUICKSTART_SKIP_INSTALL:-}" ]; then
  echo "==> Installing requirements"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
fi

export DEBUG=${DEBUG:-true}
PY=.venv/bin/python
echo "==> Checking the database"
$PY manage.py ensuredb || exit 1
echo "==> Migrating the database"
$PY manage.py migrate --noinput
$PY manage.py ensureadmin --username "$ADMIN_USER" --password "$ADMIN_PASSWORD"
echo "==> Loading the demo loyalty project"
$PY manage.py loaddemo ${TELEGRAM_BOT_TOKEN:+--token "$TELEGRAM_BOT_TOKEN"}

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "==> Stopping the web admin and the bot runner"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

$PY manage.py runserver --noreload "127.0.0.1:${PORT}" &
pids+=($!)
$PY manage.py runbot --all &
pids+=($!)

if [ -n "${TELEGRAM_BOT_TOKEN:-}" ]; then
  BOT_LINE="the demo bot answers in Telegram now"
else
  BOT_LINE="set TELEGRAM_BOT_TOKEN to connect the demo to a real bot"
fi
cat <<MSG

  Bot platform is running (Ctrl-C stops it).
    Admin:    http://127.0.0.1:${PORT}/admin/
    Username: ${ADMIN_USER}
    Password: ${ADMIN_PASSWORD}
    Health:   http://127.0.0.1:${PORT}/healthz
    Bot:      ${BOT_LINE}

MSG
# Either one ending (a crash, a wrong setting) stops the other: the trap runs.
set +e
wait -n "${pids[@]}"
code=$?
exit "$code"
