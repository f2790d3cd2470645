"""The app object gunicorn imports: `gunicorn -c gunicorn/gunicorn-config.py wsgi:app`."""

from rest_api.app import create_app

app = create_app()
