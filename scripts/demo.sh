#!/usr/bin/env bash
# Set up, ingest a folder (default: the sample documents) and start the chat UI on the embedded
# defaults (Qdrant Edge under ./.rag, BGE-small embeddings, MiniLM cross-encoder; models download
# from the Hugging Face Hub on first use). Usage: scripts/demo.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
folder=${1:-../shared/evaldata/docs-mixed/files}
[ -d "$folder" ] || folder=samples
.venv/bin/rag ingest "$folder"
.venv/bin/rag stats
exec .venv/bin/rag ui --ingest-root "$folder"   # the UI may also index more files from this folder
