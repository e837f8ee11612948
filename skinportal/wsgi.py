"""WSGI entry point: gunicorn skinportal.wsgi"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skinportal.settings")

application = get_wsgi_application()

# gunicorn runs no system checks: log the deployment warnings (skinportal/checks.py) at start.
from skinportal.checks import log_startup_warnings  # needs the settings loaded above

log_startup_warnings()
