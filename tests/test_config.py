"""Settings precedence and validation: defaults < rag.toml < RAG_* env < explicit overrides."""

import pytest

from rag.config import BGE_QUERY_INSTRUCTION, Settings, load_settings
from rag.errors import ConfigError


def test_precedence_toml_env_override(tmp_path, monkeypatch):
    toml = tmp_path / "rag.toml"
    toml.write_text('collection = "from_toml"\ntop_k = 7\nrrf_k = 30\ndefault_acl = ["a", "b"]\n')
    monkeypatch.setenv("RAG_TOP_K", "12")
    settings = load_settings(toml, rrf_k=90)
    assert settings.collection == "from_toml"  # toml beats default
    assert settings.top_k == 12  # env beats toml
    assert settings.rrf_k == 90  # override beats toml
    assert settings.default_acl == ["a", "b"]


def test_env_list_and_bool(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAG_DEFAULT_ACL", "public, hr")
    monkeypatch.setenv("RAG_STRICT_CITATIONS", "false")
    settings = load_settings()
    assert settings.default_acl == ["public", "hr"]
    assert settings.strict_citations is False


def test_unknown_toml_key_is_an_error(tmp_path):
    toml = tmp_path / "rag.toml"
    toml.write_text("colection = 'typo'\n")
    with pytest.raises(ConfigError, match="colection"):
        load_settings(toml)


def test_bad_env_value_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAG_TOP_K", "many")
    with pytest.raises(ConfigError, match="RAG_TOP_K"):
        load_settings()


def test_invalid_values_rejected():
    with pytest.raises(ConfigError, match="mode"):
        load_settings(None, mode="fuzzy")
    with pytest.raises(ConfigError, match="collection"):
        load_settings(None, collection="../escape")


def test_query_instruction_only_for_bge():
    assert Settings(embed_model="BAAI/bge-small-en-v1.5").resolved_query_instruction() == BGE_QUERY_INSTRUCTION
    assert Settings(embed_model="/models/all-MiniLM-L6-v2").resolved_query_instruction() == ""
    assert Settings(embed_model="BAAI/bge-small-en-v1.5", query_instruction="").resolved_query_instruction() == ""


def test_secrets_redacted(monkeypatch):
    settings = Settings(llm_api_key="sk-secret-123")
    assert "sk-secret-123" not in str(settings.public_dict())
    assert settings.llm_enabled  # an API key means the LLM path is configured


def test_llm_provider_defaults_to_extractive_without_endpoint(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert not Settings().llm_enabled
    assert Settings(llm_base_url="http://127.0.0.1:9/v1").llm_enabled
    assert not Settings(llm_base_url="http://127.0.0.1:9/v1", llm_provider="extractive").llm_enabled


def test_max_question_chars_setting(monkeypatch):
    assert Settings().max_question_chars == 2000
    monkeypatch.setenv("RAG_MAX_QUESTION_CHARS", "500")
    assert load_settings(None).max_question_chars == 500
    monkeypatch.setenv("RAG_MAX_QUESTION_CHARS", "0")
    with pytest.raises(ConfigError, match="max_question_chars"):
        load_settings(None)


def test_one_redaction_function_masks_every_secret_shape_and_keeps_prose():
    from rag.config import redact
    from rag.secrets import register_secrets, url_secrets

    url = "http://alice:pa55word-xyz@llm.internal:8000/v1"
    assert redact(f"endpoint {url} failed") == "endpoint http://***@llm.internal:8000/v1 failed"
    assert redact("401: Authorization: Basic YWxpY2U6cGE1NXdvcmQteHl6") == "401: Authorization: Basic ***"
    assert redact("Incorrect API key provided: sk-proj-abcdefgh12345678") == "Incorrect API key provided: ***"
    assert redact("GET /v1?api_key=abc123&x=1") == "GET /v1?api_key=***&x=1"
    # the secrets a URL carries, including the Base64 form a server may echo without "Basic"
    assert redact("echo: YWxpY2U6cGE1NXdvcmQteHl6 / pa55word-xyz", url_secrets(url)) == "echo: *** / ***"
    register_secrets(["registered-secret-42"])
    assert redact("log line with registered-secret-42 inside") == "log line with *** inside"
    prose = "Basic information about the user and tokens: the Bearer of the letter."
    assert redact(prose) == prose


def test_secrets_are_redacted_in_every_log_record(caplog):
    import logging

    with caplog.at_level(logging.INFO):
        logging.getLogger("httpx").info("HTTP Request: POST %s", "http://alice:pa55word-xyz@host/v1/chat")
    assert "pa55word" not in caplog.text and "http://***@host/v1/chat" in caplog.text


def test_structured_redaction_masks_secret_fields_but_keeps_token_counts():
    """Settings dumps and eval results shown in the UI: secret-named fields masked whole, token counts kept
    (the Eval tab used to mask chunk_tokens and evidence_token_budget as if they were secrets)."""
    from rag.secrets import is_secret_key, redact_data

    data = {"config": {"llm_api_key": "abcd1234efgh", "qdrant_api_key": None, "chunk_tokens": 256,
                       "evidence_token_budget": 2500, "rerank_max_tokens": 192, "auth_token": "t0k3n-value",
                       "client_secret": "s3cr3t-value", "llm_base_url": "http://user:pa55word@host/v1"},
            "runs": [{"password": "hunter22", "note": "called with api_key=zzzz9999"}]}
    assert redact_data(data) == {
        "config": {"llm_api_key": "***", "qdrant_api_key": None, "chunk_tokens": 256, "evidence_token_budget": 2500,
                   "rerank_max_tokens": 192, "auth_token": "***", "client_secret": "***",
                   "llm_base_url": "http://***@host/v1"},
        "runs": [{"password": "***", "note": "called with api_key=***"}]}
    assert [is_secret_key(k) for k in ("access_token", "chunk_tokens", "token_budget", "API-Key", "k")] == \
        [True, False, False, True, False]


def test_eval_tab_results_keep_token_settings_visible(tmp_path):
    from rag.config import Settings
    from ui.eval_reports import redact_results

    settings = Settings(llm_api_key="sk-live-abcdefgh12345678", state_dir=str(tmp_path))
    shown = redact_results({"config": {**settings.public_dict(), "chunk_tokens": 256}}, settings)
    assert shown["config"]["chunk_tokens"] == 256 and shown["config"]["evidence_token_budget"] == 2500
    assert shown["config"]["llm_api_key"] == "***" and "abcdefgh" not in str(shown)
