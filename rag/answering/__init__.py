"""Answering: the evidence gate, cited answers from an LLM or offline, citation validation."""
