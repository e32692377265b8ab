"""A Django project in one module: settings configured in code, one FileResponse view,
and whitenoise serving STATIC_DIR under /static/.

Django's WSGIHandler hands a FileResponse's file to `wsgi.file_wrapper` and
points the file's close() at `response.close()`, which fires
`django.core.signals.request_finished`.  whitenoise answers a Range with its
SlicedFile, which Django hands to `wsgi.file_wrapper` the same way; with
autorefresh it looks files up per request, so tests add them as they go.
"""
from __future__ import annotations

import os
import tempfile

import django
from django.conf import settings

STATIC_DIR = tempfile.mkdtemp(prefix="ktlswsgi-django-static-")
PROTECTED_DIR = tempfile.mkdtemp(prefix="ktlswsgi-django-protected-")

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="ktlswsgi-tests-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=["whitenoise.middleware.WhiteNoiseMiddleware"],
        DATABASES={},
        USE_TZ=True,
        STATIC_URL="/static/",
        STATIC_ROOT=STATIC_DIR,
        WHITENOISE_AUTOREFRESH=True,
        WHITENOISE_USE_FINDERS=False,
        # django-sendfile2: X-Accel-Redirect URLs under /protected/ (--sendfile-root
        # /protected=PROTECTED_DIR maps them back).
        SENDFILE_BACKEND="django_sendfile.backends.nginx",
        SENDFILE_ROOT=PROTECTED_DIR,
        SENDFILE_URL="/protected",
    )
    django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import FileResponse  # noqa: E402
from django.urls import path  # noqa: E402


def file_view(request):
    return FileResponse(open(request.GET["path"], "rb"), content_type="application/octet-stream")


def protected_view(request):
    from django_sendfile import sendfile
    return sendfile(request, os.path.join(PROTECTED_DIR, request.GET["name"]),
                    attachment=True)


urlpatterns = [path("file", file_view), path("protected-file", protected_view)]

application = get_wsgi_application()
