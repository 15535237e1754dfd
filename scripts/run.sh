#!/usr/bin/env bash
# `make run`: migrate, seed the demo, start a Celery worker and the web server.
# Ctrl-C stops both. Running it again reuses the venv, the database and the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

$PY manage.py migrate --noinput
$PY manage.py seed_demo

mkdir -p var/log
# The worker runs in its own process group so Ctrl-C reaches it through our trap,
# which lets it finish (warm shutdown) instead of dying mid-write.
setsid .venv/bin/celery -A webapp worker -Q generation,execution -c 1 -B -l info \
  -s var/celerybeat-schedule \
  --logfile var/log/worker.log &
WORKER_PID=$!
stop() {
  trap - INT TERM EXIT
  echo "Stopping the worker and the server..."
  kill -TERM -- -"$WORKER_PID" 2>/dev/null || true
  [ -n "${SERVER_PID:-}" ] && kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "Stopped."
}
trap stop INT TERM EXIT

cat <<MSG

  Sparsity preference lab is starting at http://$HOST:$PORT/
    staff:  admin / admin-demo-password   -> study page with progress, alpha and win rates
    rater:  rater / rater-demo-password   -> blind pairwise rating
  The worker (log: var/log/worker.log) is generating the demo study's outputs now.
  Ctrl-C stops both.

MSG
$PY manage.py runserver --noreload "$HOST:$PORT" &
SERVER_PID=$!
wait "$SERVER_PID"
