"""SkinPortal settings.

Every value a deployment may change comes from an environment variable (read by the typed
helpers in skinportal/env.py). The embedded defaults run a complete single-machine portal:
SQLite under var/, Celery tasks run eagerly in the web process, e-mail printed to the console.

SKINPORTAL_ENV=production switches to production rules: SECRET_KEY and ALLOWED_HOSTS are
required, DEBUG is off, static files are served by whitenoise from STATIC_ROOT (collectstatic).
See docs/portal.md for the full list.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from skinportal.env import (
    available_cores,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_networks,
    env_optional_int,
    env_optional_str,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # git-ignored: the default database and uploaded images live here

SKINPORTAL_ENV = env_choice("SKINPORTAL_ENV", "development", ("development", "production"))
PRODUCTION = SKINPORTAL_ENV == "production"

if PRODUCTION:
    SECRET_KEY = env_str("SECRET_KEY", required=True)
else:
    # Only for local development: production refuses to start without SECRET_KEY.
    SECRET_KEY = env_str("SECRET_KEY", "django-insecure-skinportal-local-development-only")

DEBUG = env_bool("DEBUG", default=not PRODUCTION)

if PRODUCTION:
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", required=True)
else:
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",  # API tokens: hashed at rest, with an expiry (see "API tokens" below)
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc assets served locally: no CDN
    "axes",  # brute-force lockout of logins (see "Accounts and sessions" below)
    "skinportal.apps.SkinPortalConfig",  # start-up checks (skinportal/checks.py); the cache table at migrate
    "diagnosis",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "skinportal.sessions.SessionLifetimeMiddleware",  # idle timeout and absolute lifetime
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Content-Security-Policy, Cache-Control: no-store and friends (static files never reach here).
    "skinportal.security.SecurityHeadersMiddleware",
    # A body in a charset that is no text encoding ('rot13'), a NUL in a header: a 400 before the
    # CSRF check reads the body or django-axes stores the User-Agent.
    "skinportal.errors.MalformedRequestMiddleware",
    # One audit event per patient-data request; wraps the scoping below so its 404s are recorded.
    "diagnosis.middleware.AuditMiddleware",
    # Another organisation's id in a page URL is a 404 before the view runs, whatever the method.
    "diagnosis.middleware.ObjectScopeMiddleware",
    # Last: turns a login that django-axes flagged as locked out into the lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "skinportal.urls"
WSGI_APPLICATION = "skinportal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# Database: DATABASE_URL (e.g. postgres://user:pass@host:5432/skinportal) or SQLite under var/.
_database_url = env_optional_str("DATABASE_URL")
if _database_url:
    DATABASES = {
        "default": dj_database_url.parse(
            _database_url, conn_max_age=env_int("DB_CONN_MAX_AGE", 0, minimum=0), conn_health_checks=True
        )
    }
else:
    VAR_DIR.mkdir(exist_ok=True)
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "db.sqlite3"}}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker processes share the file: wait for a lock instead of failing, and take the
    # write lock at the start of a transaction (no deadlock between two upgrading readers).
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 30, "transaction_mode": "IMMEDIATE"})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_MIN_LENGTH = env_int("PASSWORD_MIN_LENGTH", 12, minimum=8)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": PASSWORD_MIN_LENGTH},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# --- Accounts and sessions (docs/portal.md#accounts-and-sessions) ---------------------------
# Reverse proxies in front of the portal that append the client's address to X-Forwarded-For
# (nginx: proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for). Login lockouts, API
# throttles and the audit trail key on the address the outermost trusted proxy saw, but only for a
# connection from one of SKINPORTAL_TRUSTED_PROXY_ADDRESSES: anyone else who reaches gunicorn
# could write the header themselves. Default: no proxy is trusted (REMOTE_ADDR; behind a proxy that
# is the proxy itself, so everyone would share one lockout and one rate: skinportal/checks.py warns).
SKINPORTAL_TRUSTED_PROXIES = env_int("SKINPORTAL_TRUSTED_PROXIES", 0, minimum=0)
SKINPORTAL_TRUSTED_PROXY_ADDRESSES = env_networks("SKINPORTAL_TRUSTED_PROXY_ADDRESSES", ["127.0.0.1", "::1"])
# django-axes: after AXES_FAILURE_LIMIT failed logins for one username from one address, that
# pair is locked out for the cool-off (0: until an admin deletes the attempt in the admin or runs
# `manage.py axes_reset_username NAME`). Attempts are kept in the database, shared by all workers.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login before the password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env_int("SKINPORTAL_LOGIN_FAILURE_LIMIT", 5, minimum=1)
_login_cool_off = env_int("SKINPORTAL_LOGIN_COOLOFF", 15 * 60, minimum=0)  # seconds
AXES_COOLOFF_TIME = dt.timedelta(seconds=_login_cool_off) if _login_cool_off else None
# A success resets the count, inside the login lock (skinportal.accounts.login_authenticate), not at login().
AXES_RESET_ON_SUCCESS = False
AXES_CLIENT_IP_CALLABLE = "skinportal.accounts.client_ip"
AXES_LOCKOUT_CALLABLE = "skinportal.accounts.lockout_response"  # HTML page, or JSON under /api/
AXES_HTTP_RESPONSE_CODE = 429
AXES_SENSITIVE_PARAMETERS: list[str] = []  # lockout logs name the username and address; passwords stay masked
# Refuses a lockout check made outside skinportal.accounts.login_attempt_serialised, which makes
# the check, the password check and the failure count one atomic step per username.
AXES_HANDLER = "skinportal.accounts.SerialisedAxesHandler"
# API tokens (django-rest-knox): each key is stored as a SHA-512 digest, lives
# SKINPORTAL_API_TOKEN_TTL seconds (30 days), and dies sooner with a password change or reset or
# a deactivation (diagnosis/credentials.py). A user holds at most SKINPORTAL_API_TOKEN_LIMIT.
SKINPORTAL_API_TOKEN_TTL = env_int("SKINPORTAL_API_TOKEN_TTL", 30 * 24 * 3600, minimum=300)  # seconds
SKINPORTAL_API_TOKEN_LIMIT = env_int("SKINPORTAL_API_TOKEN_LIMIT", 10, minimum=1)
REST_KNOX = {
    "AUTH_HEADER_PREFIX": "Token",  # the header integrators already send: Authorization: Token <key>
    "TOKEN_TTL": dt.timedelta(seconds=SKINPORTAL_API_TOKEN_TTL),
    "TOKEN_LIMIT_PER_USER": SKINPORTAL_API_TOKEN_LIMIT,
    "AUTO_REFRESH": False,  # a token in use does not live longer
}
# Sessions: a new key at every login (django.contrib.auth.login), an idle timeout (the cookie
# age, renewed by each request, and checked again by skinportal.sessions) and an absolute
# lifetime from the login, whatever the activity.
SKINPORTAL_SESSION_IDLE_TIMEOUT = env_int("SKINPORTAL_SESSION_IDLE_TIMEOUT", 30 * 60, minimum=60)  # seconds
SKINPORTAL_SESSION_MAX_AGE = env_int("SKINPORTAL_SESSION_MAX_AGE", 12 * 3600, minimum=60)  # seconds
SESSION_COOKIE_AGE = SKINPORTAL_SESSION_IDLE_TIMEOUT
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# No script reads the CSRF cookie: forms, the browsable API and Swagger UI take the token from the page.
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# Static files: hand-written CSS under static/, collected to STATIC_ROOT for whitenoise in production.
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing folder; dev serves from static/

# Uploaded images. There is deliberately no public media URL: every image is served by a view
# that checks the viewer's organisation.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
# SKINPORTAL_STORAGE=s3 keeps them in an S3-compatible bucket (AWS, MinIO, Ceph...) through
# django-storages, so web and worker nodes on several machines share them without a shared volume.
SKINPORTAL_STORAGE = env_choice("SKINPORTAL_STORAGE", "filesystem", ("filesystem", "s3"))
if SKINPORTAL_STORAGE == "s3":
    _media_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("AWS_STORAGE_BUCKET_NAME", required=True),
            "endpoint_url": env_optional_str("AWS_S3_ENDPOINT_URL"),  # e.g. http://minio:9000
            "region_name": env_optional_str("AWS_S3_REGION_NAME"),
            "location": env_str("AWS_LOCATION", ""),  # key prefix inside the bucket
            "default_acl": None,  # the bucket's own (private) policy; images are never public
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }  # credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the machine's role, read by boto3
else:
    _media_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _media_storage,
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# Uploads: one image at most SKINPORTAL_MAX_UPLOAD_BYTES; a form may carry several.
SKINPORTAL_MAX_UPLOAD_BYTES = env_int("SKINPORTAL_MAX_UPLOAD_BYTES", 10 * 1024 * 1024, minimum=1024)
SKINPORTAL_MAX_FILES_PER_UPLOAD = env_int("SKINPORTAL_MAX_FILES_PER_UPLOAD", 20, minimum=1)
# A batch (several files, or the images inside one ZIP) holds at most this many images.
SKINPORTAL_MAX_FILES_PER_BATCH = env_int("SKINPORTAL_MAX_FILES_PER_BATCH", 500, minimum=1)
DATA_UPLOAD_MAX_NUMBER_FILES = max(SKINPORTAL_MAX_FILES_PER_UPLOAD, SKINPORTAL_MAX_FILES_PER_BATCH) + 5
# Decompression budget (diagnosis/budget.py; SECURITY.md says why these figures): pixels of one
# image (25 MP: a 6000x4000 dermatoscope camera), and per request (an upload or a whole batch) the
# decoded pixels, the image files' bytes (as sent or unpacked from a ZIP), the bytes PNG image
# data inflates to and, backing them, the seconds spent: any upload is answered within 5 s on 2 cores.
SKINPORTAL_MAX_IMAGE_PIXELS = env_int("SKINPORTAL_MAX_IMAGE_PIXELS", 25_000_000, minimum=10_000)
SKINPORTAL_UPLOAD_PIXEL_BUDGET = env_int("SKINPORTAL_UPLOAD_PIXEL_BUDGET", 200_000_000, minimum=10_000)
SKINPORTAL_UPLOAD_FILE_BUDGET = env_int("SKINPORTAL_UPLOAD_FILE_BUDGET", 40 * 1024 * 1024, minimum=1024)
SKINPORTAL_UPLOAD_INFLATE_BUDGET = env_int("SKINPORTAL_UPLOAD_INFLATE_BUDGET", 160 * 1024 * 1024, minimum=1024)
SKINPORTAL_UPLOAD_SECONDS = env_int("SKINPORTAL_UPLOAD_SECONDS", 4, minimum=1)

# E-mail (password reset): printed to the console unless an SMTP host is configured.
EMAIL_HOST = env_optional_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "skinportal@localhost")

# Celery: with no broker configured, tasks run eagerly inside the web process, so an upload
# returns with its classification. CELERY_BROKER_URL (e.g. redis://127.0.0.1:6379/0) moves
# classification to separate `celery -A skinportal worker` processes. docs/deployment.md explains
# the reliability settings below.
CELERY_BROKER_URL = env_optional_str("CELERY_BROKER_URL")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL is None)
if CELERY_BROKER_URL is None:
    CELERY_BROKER_URL = "memory://localhost/"  # never contacted: tasks run eagerly
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_RESULT_BACKEND = env_optional_str("CELERY_RESULT_BACKEND")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "skinportal")
# Nothing lost: a message is acknowledged only after its task finished, and a worker process
# that dies (SIGKILL, out of memory, hard time limit) puts its message back on the queue.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# The worker keeps Django's LOGGING (its escaping formatter) instead of installing its own root handler.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 1, minimum=1)
# One pool process per core, each with one onnxruntime thread (skinportal/celery.py sizes the
# threads): processes overlap one another's decoding and database waits with inference, which
# one process with several threads cannot (scripts/bench_portal.py: 56% vs 46% of raw model
# throughput on 2 cores). Each process holds its own model session: about 400 MiB.
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", available_cores(), minimum=1)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", 0, minimum=0) or None  # KiB
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300, minimum=2)  # hard: the process is killed
CELERY_TASK_SOFT_TIME_LIMIT = env_int(
    "CELERY_TASK_SOFT_TIME_LIMIT", max(1, CELERY_TASK_TIME_LIMIT - max(1, CELERY_TASK_TIME_LIMIT // 10)), minimum=1
)
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CELERY_TASK_SOFT_TIME_LIMIT ({CELERY_TASK_SOFT_TIME_LIMIT}) must be below CELERY_TASK_TIME_LIMIT "
        f"({CELERY_TASK_TIME_LIMIT})."
    )
# Retries of transient errors (database or storage briefly away): exponential backoff, capped.
SKINPORTAL_RETRY_BACKOFF_MAX = env_int("SKINPORTAL_RETRY_BACKOFF_MAX", 60, minimum=1)
SKINPORTAL_MAX_RETRIES = env_int("SKINPORTAL_MAX_RETRIES", 5, minimum=0)
# Redis hands an unacknowledged message to another worker after the visibility timeout. It must
# be longer than the longest a message can legitimately stay unacknowledged (the hard time limit,
# or a retry's countdown), or a slow task would run twice.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + 300, minimum=2)
if CELERY_VISIBILITY_TIMEOUT <= max(CELERY_TASK_TIME_LIMIT, SKINPORTAL_RETRY_BACKOFF_MAX):
    raise ImproperlyConfigured(
        f"CELERY_VISIBILITY_TIMEOUT ({CELERY_VISIBILITY_TIMEOUT} s) must be longer than CELERY_TASK_TIME_LIMIT "
        f"({CELERY_TASK_TIME_LIMIT} s) and SKINPORTAL_RETRY_BACKOFF_MAX ({SKINPORTAL_RETRY_BACKOFF_MAX} s)."
    )
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    # How often a worker looks for messages of dead workers whose visibility timeout has passed.
    "unacked_restore_interval": max(1, min(10, CELERY_VISIBILITY_TIMEOUT // 4)),
    "unacked_restore_throttle": 1,
    "socket_connect_timeout": 5,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A broker outage at upload time fails fast; the image is kept and its result says so.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
# After this many deliveries of the same request (each one ended by a dead worker) the
# classification is stored as failed with the reason, instead of killing workers forever.
SKINPORTAL_MAX_DELIVERIES = env_int("SKINPORTAL_MAX_DELIVERIES", 3, minimum=1)
# Images per task when several are queued together (batches, imports, reclassify).
SKINPORTAL_MICRO_BATCH = env_int("SKINPORTAL_MICRO_BATCH", 16, minimum=1)

# The model served. ml/ reads no Django settings: diagnosis/inference/ passes these three into
# ml.inference.get_classifier (and the /readyz model check).
# A bundle folder (manifest.json + ONNX files); unset: the bundle named in ml/models/CURRENT.
SKINPORTAL_MODEL_DIR = env_optional_str("SKINPORTAL_MODEL_DIR")
# Which of the bundle's files is served; the same names as ml.manifest.VARIANTS (a test checks).
SKINPORTAL_MODEL_VARIANT = env_choice("SKINPORTAL_MODEL_VARIANT", "fp32", ("fp32", "int8"))
# onnxruntime intra-op threads of the one session per process. Unset (None): a worker gives each
# pool process cores // concurrency (skinportal/celery.py sets this setting before the pool
# starts; a value that oversubscribes the cores is lowered there), any other process
# min(4, cores) (ml.inference's default).
SKINPORTAL_ORT_THREADS = env_optional_int("SKINPORTAL_ORT_THREADS", minimum=1)
# The lesion segmenter run with each classification (the same threads): a segmentation bundle
# folder, or "classical" for the classical segmenter; unset: the bundle named in
# ml/models/SEGMENTER (ml.manifest.named_segmenter_dir).
SKINPORTAL_SEGMENTER_DIR = env_optional_str("SKINPORTAL_SEGMENTER_DIR")

# Security headers. Production defaults pass `manage.py check --deploy --fail-level WARNING`
# (tested); CSP, Cache-Control: no-store and Permissions-Policy come from skinportal/security.py.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Cookies are Secure in production (set SECURE_COOKIES=false only behind plain HTTP on a trusted network).
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
if env_bool("SECURE_PROXY_SSL_HEADER", False):  # behind a TLS-terminating proxy that sets X-Forwarded-Proto
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
# Load balancers probe these over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# /readyz tells anyone only "ready" or "not ready"; its checks' details (database engine, broker,
# model version, file paths) go to staff and to a monitor sending `Authorization: Bearer <this>`.
SKINPORTAL_MONITORING_TOKEN = env_optional_str("SKINPORTAL_MONITORING_TOKEN")
if SKINPORTAL_MONITORING_TOKEN is not None and len(SKINPORTAL_MONITORING_TOKEN) < 32:
    raise ImproperlyConfigured(
        "SKINPORTAL_MONITORING_TOKEN must be at least 32 characters "
        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')."
    )
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PRODUCTION)

# API rates ("number/second|minute|hour|day"): token creation per client address, uploads per user.
SKINPORTAL_THROTTLE_TOKEN = env_str("SKINPORTAL_THROTTLE_TOKEN", "10/minute")
SKINPORTAL_THROTTLE_UPLOADS = env_str("SKINPORTAL_THROTTLE_UPLOADS", "60/minute")
# Password-reset requests (skinportal.accounts.PasswordResetView): per client address, and per
# e-mail address entered (whether an account has it or not).
SKINPORTAL_THROTTLE_PASSWORD_RESET = env_str("SKINPORTAL_THROTTLE_PASSWORD_RESET", "5/hour")
SKINPORTAL_THROTTLE_PASSWORD_RESET_EMAIL = env_str("SKINPORTAL_THROTTLE_PASSWORD_RESET_EMAIL", "3/hour")
for _name, _rate in (
    ("SKINPORTAL_THROTTLE_TOKEN", SKINPORTAL_THROTTLE_TOKEN),
    ("SKINPORTAL_THROTTLE_UPLOADS", SKINPORTAL_THROTTLE_UPLOADS),
    ("SKINPORTAL_THROTTLE_PASSWORD_RESET", SKINPORTAL_THROTTLE_PASSWORD_RESET),
    ("SKINPORTAL_THROTTLE_PASSWORD_RESET_EMAIL", SKINPORTAL_THROTTLE_PASSWORD_RESET_EMAIL),
):
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", _rate):
        raise ImproperlyConfigured(f"{_name} must look like 10/minute (per s, min, hour or day), not {_rate!r}.")

# Cache: holds the rate counters (API throttles, password-reset limits). They must be shared by
# every process, or each gunicorn worker counts alone and allows the full rate (3 workers: 30
# token attempts a minute instead of 10). CACHE_URL: redis://host:6379/1 (or rediss://, unix://),
# dbcache://TABLE (the database, shared by every node), locmemcache:// (this process only).
# Unset: the database in production (`migrate` creates its table), this process in development
# (runserver is one process). skinportal/checks.py warns about a per-process cache in production.
CACHE_TABLE = "skinportal_cache"
_cache_url = env_optional_str("CACHE_URL") or ("dbcache://" + CACHE_TABLE if PRODUCTION else "locmemcache://")
if _cache_url.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}}
elif _cache_url.startswith("dbcache://"):
    _table = _cache_url.removeprefix("dbcache://") or CACHE_TABLE
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", _table):
        raise ImproperlyConfigured(f"CACHE_URL's table must be a plain name (dbcache://skinportal_cache), got {_table!r}.")
    # Many entries allowed: culling would drop live counters (each address has its own).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": _table,
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }
elif _cache_url.startswith("locmemcache://"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "skinportal"}}
else:
    raise ImproperlyConfigured(
        "CACHE_URL must be a redis://, rediss:// or unix:// URL, dbcache://TABLE or locmemcache://, "
        f"got {_cache_url!r}."
    )

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "diagnosis.api.authentication.ApiTokenAuthentication",  # knox, `Authorization: Token <key>`
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's parsers, the JSON one with a nesting limit (100,000 `[` were a RecursionError 500).
    "DEFAULT_PARSER_CLASSES": [
        "diagnosis.api.parsers.JSONParser",
        "diagnosis.api.parsers.FormParser",
        "diagnosis.api.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "diagnosis.api.schema.PortalAutoSchema",  # descriptions never from docstrings
    "EXCEPTION_HANDLER": "diagnosis.api.errors.api_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "diagnosis.api.pagination.StandardPagination",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Scopes used by diagnosis.api.throttling.ScopedWriteRateThrottle: a 429 with Retry-After beyond them.
    "DEFAULT_THROTTLE_RATES": {"token": SKINPORTAL_THROTTLE_TOKEN, "uploads": SKINPORTAL_THROTTLE_UPLOADS},
    # Per-IP rates key on skinportal.accounts.client_ip (ScopedWriteRateThrottle.get_ident), which
    # also checks that the peer is a trusted proxy; this is for any other DRF throttle. (Unset, DRF
    # would take a client-supplied X-Forwarded-For as is: a fresh rate per forged header.)
    "NUM_PROXIES": SKINPORTAL_TRUSTED_PROXIES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "SkinPortal API",
    "DESCRIPTION": (
        "Skin-lesion decision support for clinicians. Research and education only: "
        "NOT a certified medical device; results are decision support, not a diagnosis."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # An API token in a path: the first 15 hex digits of its key (diagnosis/api/urls.py).
    "PATH_CONVERTER_OVERRIDES": {"apitokenkey": {"type": "string", "pattern": "^[0-9a-f]{15}$"}},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The screening warning codes appear in two places (a result's warnings, a batch image's): one name.
    "ENUM_NAME_OVERRIDES": {"WarningCodeEnum": "ml.screening.WARNING_CODES"},
    # Every operation documents the errors the framework around it can answer (401, 400, 404, 403, 429).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "diagnosis.api.schema.add_error_responses",
    ],
}

# One handler for every logger, with a formatter that escapes control characters: a newline in
# a username tried at the login (or in a path) cannot forge a log line (skinportal/logging.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "skinportal.logging.EscapingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # Django's defaults give these loggers handlers of their own, with unescaped formats (runserver's
    # request lines, errors in DEBUG): they write through the root's console handler instead.
    "loggers": {
        "django": {"handlers": [], "propagate": True},
        "django.server": {"handlers": [], "propagate": True},
    },
}
