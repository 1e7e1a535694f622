# Rofecare server image: used by docker-compose.yml for the scaled (MongoDB) deployment.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fhir_server ./fhir_server
COPY profiles ./profiles
COPY operations ./operations
COPY terminology ./terminology
COPY adapters ./adapters
RUN pip install --no-cache-dir . && useradd --system --home /app rofecare
USER rofecare
ENV ROFECARE_HOST=0.0.0.0 ROFECARE_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ready')"
CMD ["rofecare", "serve"]
