"""highdicom's standard tables are loaded at start-up, not by the first report."""

from __future__ import annotations

from pathlib import Path

import pytest
from highdicom import _standard_utils as tables

from daemon.report.standard_tables import _LOADERS, load_highdicom_tables


@pytest.mark.no_database
def test_the_tables_highdicom_builds_with_are_cached_after_loading() -> None:
    loaders = [getattr(tables, name) for name in _LOADERS]
    for load in loaders:
        load.cache_clear()
    assert load_highdicom_tables()
    # What a SEG or SR build asks for next is served from the cache, not read again.
    for load in loaders:
        assert load.cache_info().currsize == 1
        misses = load.cache_info().misses
        load()
        assert load.cache_info().misses == misses


@pytest.mark.database_neutral
def test_a_started_node_loads_them_before_any_report(tmp_path: Path) -> None:
    from daemon.app import Node
    from tests.support.node_settings import loopback_node_settings
    from tests.support.peers import wait_until

    tables.get_module_attribute_map.cache_clear()
    node = Node(loopback_node_settings(tmp_path / "node", hl7={"enabled": False}))
    node.start()
    try:
        wait_until(lambda: tables.get_module_attribute_map.cache_info().currsize == 1, timeout_s=10.0)
    finally:
        node.stop()
