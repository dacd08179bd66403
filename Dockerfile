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
EXPOSE 7860
CMD ["rag", "ui", "--host", "0.0.0.0", "--port", "7860"]
