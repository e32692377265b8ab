"""A small real Django project in one module: the admin, sessions, CSRF, and
views that set cookies the way Django does (`Morsel.output(header="")`, whose
values start with a space).

Served through the CLI in a subprocess (`apps.django_site:application`), so
its settings never meet `django_files`' in the test process.  Sessions are
signed cookies and the database is an in-memory SQLite: GET /admin/login/
needs no tables.
"""
from __future__ import annotations

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="ktlswsgi-tests-only-django-site",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
        "django.contrib.sessions", "django.contrib.messages",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    TEMPLATES=[{
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": [
            "django.template.context_processors.request",
            "django.contrib.auth.context_processors.auth",
            "django.contrib.messages.context_processors.messages",
        ]},
    }],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    USE_TZ=True,
)
django.setup()

from django.contrib import admin  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def set_cookie(request):
    """Sets the cookie the request names (so a test can pass its secret marker)."""
    response = HttpResponse(b"cookie set\n", content_type="text/plain")
    response.set_cookie("sessionid", request.GET.get("value", "SECRET-SESSION-VALUE"),
                        httponly=True)
    response.set_cookie("theme", "dark", max_age=3600, samesite="Lax")
    return response


def echo_cookie(request):
    return HttpResponse(request.COOKIES.get("sessionid", "").encode(), content_type="text/plain")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("set-cookie", set_cookie),
    path("echo-cookie", echo_cookie),
]

application = get_wsgi_application()
