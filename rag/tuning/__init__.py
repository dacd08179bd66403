"""Fine-tuning the embedder and a reranker on a collection's own chunks (`rag tune`)."""
