# fastml: gunicorn with Uvicorn workers on the embedded default (local model store, SQLite jobs).
# Build: docker build -t fastml .   Offline: scripts/docker-build-offline (README, "Docker").
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: install the pinned requirements into a virtual environment (a venv also works on
# Debian's externally-managed Python). Wheels only, so no compiler is needed or shipped.
FROM ${BASE_IMAGE} AS build
# Lets the docker tests find and remove the untagged build stages their builds leave.
LABEL org.fastml.stage=build
# Empty: install from PyPI. A folder of wheels in the build context: install from it, offline.
ARG WHEELHOUSE=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
COPY requirements.txt /build/
# Without a wheelhouse this copies requirements.txt again, harmlessly: COPY needs a source.
COPY ${WHEELHOUSE:-requirements.txt} /build/wheels/
# Then drop what serving never needs: the installer itself and the libraries' own test suites.
RUN /opt/venv/bin/pip install --only-binary=:all: \
        ${WHEELHOUSE:+--no-index --find-links /build/wheels} -r /build/requirements.txt \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -depth -type d -path '*/site-packages/*/tests' -exec rm -rf {} +

# Stage 2: the venv and the application, nothing else.
FROM ${BASE_IMAGE}
# numba keeps the compiled tree walk (ML/tree_walk.py) in NUMBA_CACHE_DIR, which the server's
# user owns (the code beside it is read-only); compiled for a generic x86-64/arm64 CPU, so the
# cache filled at build is valid on whatever host runs the image.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/var/cache/fastml/numba \
    NUMBA_CPU_NAME=generic \
    FASTML_BIND=0.0.0.0:8000
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app fastml
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY ML ML
COPY rest_api rest_api
COPY gunicorn gunicorn
COPY testing testing
COPY wsgi.py .
# Code stays root-owned and read-only to the server, so compile it now (a faster start);
# only the volume, the log and numba's cache are writable.
RUN python -m compileall -q ML rest_api gunicorn testing wsgi.py \
    && mkdir -p ML/saved_models && chown fastml:fastml ML/saved_models \
    && touch ML_server.log && chown fastml:fastml ML_server.log \
    && mkdir -p "$NUMBA_CACHE_DIR" && chown fastml:fastml "$NUMBA_CACHE_DIR"
USER fastml
# Compile the tree walk into that cache now: a server then loads it instead of compiling.
RUN python -c "import ML.tree_walk" && ls "$NUMBA_CACHE_DIR"/*/*.nbi >/dev/null
EXPOSE 8000
# Models, job records, uploads, the generated secret key and admin password live here.
VOLUME ["/app/ML/saved_models"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
CMD ["gunicorn", "-c", "gunicorn/gunicorn-config.py", "wsgi:app"]
