FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY tasks ./tasks
COPY templates ./templates
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install --no-cache-dir -e . flower
EXPOSE 8000
CMD ["aftercare", "serve", "--host", "0.0.0.0"]
