"""WSGI entry point: gunicorn skinportal.wsgi"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skinportal.settings")

application = get_wsgi_application()
