# fastml: gunicorn with Uvicorn workers on the embedded default (local model store, SQLite jobs).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FASTML_BIND=0.0.0.0:8000

WORKDIR /app
RUN useradd --create-home --uid 10001 fastml

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY ML ML
COPY rest_api rest_api
COPY gunicorn gunicorn
COPY testing testing
COPY wsgi.py .
RUN mkdir -p ML/saved_models && chown -R fastml:fastml /app

USER fastml
EXPOSE 8000
# Models, job records, the generated secret and admin password live here: keep them.
VOLUME ["/app/ML/saved_models"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn/gunicorn-config.py", "wsgi:app"]
