# The adapter's image: the `referral-adapter` command (sync worker; the web view joins with
# issue 6). Built by docker-compose.yml; no Docker engine runs on the development machines, so
# this file is not exercised by the tests.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY adapter ./adapter
COPY mappings ./mappings
COPY fhir_profiles ./fhir_profiles
COPY smart_launch ./smart_launch
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["referral-adapter"]
