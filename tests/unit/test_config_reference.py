"""docs/configuration.md is what `python -m devdocs.config_reference` writes from utils/config.py
and .env.example now (tests/unit/test_env_example.py keeps those two in step)."""

from __future__ import annotations

from devdocs import config_reference
from utils.config import env_fields


def test_the_committed_reference_is_up_to_date() -> None:
    assert config_reference.PAGE.read_text() == config_reference.render(), (
        "docs/configuration.md is stale: run `python -m devdocs.config_reference` and commit the page"
    )


def test_it_lists_every_setting_once_with_its_default() -> None:
    page = config_reference.render()
    for _, f in env_fields():
        name = f.metadata["env"]
        rows = [line for line in page.splitlines() if line.startswith(f"| `{name}` |")]
        assert len(rows) == 1, name
        default = "*(secret)*" if f.metadata["secret"] else None
        assert default is None or default in rows[0]
    assert "| `KAFKA_TOPIC` | text | `transactions` |" in page
    assert "| `VALIDATION_MAX_AMOUNT` | number | `1000000` |" in page
    assert "| `AIRFLOW_DATA_DIR` | text | `<checkout>/airflow-data` |" in page


def test_a_setting_missing_from_env_example_is_named() -> None:
    text = config_reference.ENV_EXAMPLE.read_text().replace("\nKAFKA_TOPIC=transactions\n", "\n")
    try:
        config_reference.render(text)
    except SystemExit as exc:
        assert "KAFKA_TOPIC: in utils/config.py but not in .env.example" in str(exc)
        assert config_reference.COMMAND in str(exc)
    else:
        raise AssertionError("a setting without .env.example documentation was accepted")


def test_the_reader_keeps_sections_and_multi_line_comments() -> None:
    parts = config_reference.read_env_example(
        "# intro\n\n# =====\n# Part one\n# =====\n\n# --- Kafka ----\n# Brokers,\n# comma separated.\n"
        "KAFKA_BOOTSTRAP_SERVERS=x:1\n\n# --- Other ---\n# Port:\n#   make it <free>\nA_PORT=1\n"
    )
    assert [p.title for p in parts] == ["Part one"]
    kafka, other = parts[0].sections
    assert kafka.title == "Kafka" and kafka.variables[0].name == "KAFKA_BOOTSTRAP_SERVERS"
    assert config_reference._describe(kafka.variables[0].comment) == "Brokers, comma separated."
    assert config_reference._describe(other.variables[0].comment) == "Port: `make it <free>`"
