import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
application = get_wsgi_application()
# Import every view now (the report's pull in pandas, scipy and matplotlib), not on a
# rater's first request, then take all of it out of the garbage collector's sight: a full
# collection over those ~200k long-lived objects paused a request for 58-279 ms
# (docs/benchmarks.md), and they are never garbage.
get_resolver().url_patterns  # noqa: B018 - the import is the point
gc.freeze()
