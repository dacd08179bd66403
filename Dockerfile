FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 DO_NOT_TRACK=1 GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libmagic1 && rm -rf /var/lib/apt/lists/*
COPY constraints.txt pyproject.toml README.md ./
COPY rag rag
COPY ingest ingest
COPY ui ui
COPY evals evals
# For a CPU-only image pass the CPU wheel index of PyTorch: --build-arg TORCH_INDEX=<url>
ARG TORCH_INDEX=""
RUN pip install --no-cache-dir ${TORCH_INDEX:+--index-url $TORCH_INDEX} torch==2.13.0 \
 && pip install --no-cache-dir -c constraints.txt . \
 && (pip uninstall -y torchvision || true)
EXPOSE 8000
# `rag serve` refuses a non-loopback bind until an API key exists (rag keys create NAME --acl LABEL).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=3).status == 200 else 1)"
CMD ["rag", "serve", "--host", "0.0.0.0", "--port", "8000"]
