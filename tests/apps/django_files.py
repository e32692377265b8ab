"""A Django project in one module: settings configured in code, one FileResponse view.

Django's WSGIHandler hands a FileResponse's file to `wsgi.file_wrapper` and
points the file's close() at `response.close()`, which fires
`django.core.signals.request_finished`.
"""
from __future__ import annotations

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="ktlswsgi-tests-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import FileResponse  # noqa: E402
from django.urls import path  # noqa: E402


def file_view(request):
    return FileResponse(open(request.GET["path"], "rb"), content_type="application/octet-stream")


urlpatterns = [path("file", file_view)]

application = get_wsgi_application()
