"""`engine.distributed`: the process group comes from the config, else the JAXCOOK_* environment."""

import pytest

from jaxcook.engine import distributed


def test_resolve_reads_the_environment_for_missing_fields(monkeypatch):
    monkeypatch.setenv("JAXCOOK_COORDINATOR", "10.0.0.1:1234")
    monkeypatch.setenv("JAXCOOK_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAXCOOK_PROCESS_ID", "3")
    got = distributed.resolve(distributed.DistributedConfig(process_id=1))
    assert got == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 1}
    monkeypatch.setenv("JAXCOOK_NUM_PROCESSES", "four")
    with pytest.raises(ValueError, match="JAXCOOK_NUM_PROCESSES='four': expected an integer"):
        distributed.resolve(distributed.DistributedConfig())


def test_single_process_is_left_alone(monkeypatch):
    for var in distributed.ENV.values():
        monkeypatch.delenv(var, raising=False)
    assert distributed.initialize() is False
    assert distributed.is_main_process()
