# One image for every Flower Ops service in docker-compose.yml: Celery worker,
# beat, the monitor (celery flower-ops) and the sync worker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml setup.cfg setup.py README.md /src/
COPY flower_ops /src/flower_ops
COPY sync_worker /src/sync_worker
RUN pip install /src && rm -rf /src

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --create-home app

WORKDIR /app
# the example Celery app (module "worker"); replace it with your own
COPY --chown=app:app deploy/worker.py /app/worker.py
ENV PYTHONPATH=/app

USER app
EXPOSE 5555 9808
CMD ["celery", "-A", "worker", "worker", "--loglevel=info", "--concurrency=4"]
