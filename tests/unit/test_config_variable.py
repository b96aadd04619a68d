"""The configuration from the Airflow Variable ``sfsync_config`` (Celery/Kubernetes workers share
no disk): it wins over the file when it exists, its mistakes name it, an explicit path ignores it.
``AIRFLOW_VAR_SFSYNC_CONFIG`` is the Variable as the environment secrets backend gives it."""

from __future__ import annotations

import pytest

from include.sfsync.config import ConfigError, load_config


def test_the_variable_wins_over_the_file(tmp_path, monkeypatch):
    path = tmp_path / "sfsync.yaml"
    path.write_text("overlap_seconds: 600\n")
    monkeypatch.setenv("SFSYNC_CONFIG", str(path))
    assert load_config().overlap_seconds == 600
    monkeypatch.setenv("AIRFLOW_VAR_SFSYNC_CONFIG",
                       "overlap_seconds: 120\ncustom_objects: [Subscription__c]\n")
    config = load_config(overrides={"bulk_poll_seconds": 0})
    assert (config.overlap_seconds, config.custom_objects, config.bulk_poll_seconds) == (
        120, ["Subscription__c"], 0)
    assert load_config(path).overlap_seconds == 600  # an explicit file is that file
    monkeypatch.setenv("AIRFLOW_VAR_SFSYNC_CONFIG", '{"overlap_seconds": 900}')  # JSON is YAML
    assert load_config().overlap_seconds == 900


@pytest.mark.parametrize(("value", "message"), [
    ("overlap_seconds: 5", "Airflow Variable 'sfsync_config': overlap_seconds: Input should be"),
    ("[1, 2]", "Airflow Variable 'sfsync_config': the top level must be a mapping"),
    ("a: [", "Airflow Variable 'sfsync_config': not valid YAML: line 1"),
    ("colour: blue", "Airflow Variable 'sfsync_config': colour: unknown key"),
])
def test_a_bad_variable_names_itself(monkeypatch, value, message):
    monkeypatch.setenv("AIRFLOW_VAR_SFSYNC_CONFIG", value)
    with pytest.raises(ConfigError) as err:
        load_config()
    assert str(err.value).startswith(message), err.value
