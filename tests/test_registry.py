"""One Registry for engines, detectors, sources and sinks: names, errors, plugins read on first lookup."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import Future

import polars as pl
import pytest
from conftest import make_frame

import batchnb as bn
from batchnb import detectors, engines, sinks, sources
from batchnb.engines.base import Adapter, Engine, as_engine
from batchnb.registry import Registry


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A distribution on sys.path that declares one engine and one detector through entry points."""
    (tmp_path / "plugin_mod.py").write_text(
        textwrap.dedent(
            """
            from batchnb.detectors.robust import ZScore
            from batchnb.engines.sequential import SequentialEngine

            class PluginEngine(SequentialEngine):
                name = "plugin-engine"

            plugin_zscore = ZScore(name="plugin-zscore", description="z-score, from a plugin")
            """
        )
    )
    dist = tmp_path / "batchnb_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: batchnb-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[batchnb.engines]\nplugin-engine = plugin_mod:PluginEngine\n\n"
        "[batchnb.detectors]\nplugin-zscore = plugin_mod:plugin_zscore\n\n"
        "[batchnb.sinks]\nbroken = plugin_mod:NoSuchSink\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    # The package's registries read their groups once per process: fresh ones see this distribution.
    monkeypatch.setattr(engines, "REGISTRY", _fresh(engines.REGISTRY))
    monkeypatch.setattr(detectors, "REGISTRY", _fresh(detectors.REGISTRY))
    monkeypatch.setattr(sinks, "REGISTRY", _fresh(sinks.REGISTRY))
    monkeypatch.delitem(sys.modules, "plugin_mod", raising=False)
    return tmp_path


def _fresh(registry: Registry) -> Registry:
    copy = Registry(registry.group.removeprefix("batchnb."), noun=registry.noun, hint=registry.hint)
    copy._entries = {k: v for k, v in registry._entries.items()}
    copy._convert = registry._convert
    return copy


def test_register_get_names_keep_registration_order():
    registry: Registry[int] = Registry("test-kind", noun="widget")
    registry.register("one", 1)
    registry.register("two", 2)
    registry.register_lazy("path", "os:sep")
    assert registry.names() == ["one", "two", "path"]
    assert registry.get("two") == 2 and registry.get("path") == os.sep
    assert registry.names() == ["one", "two", "path"]  # a lazy entry keeps its place once loaded
    assert "one" in registry and "three" not in registry


def test_unknown_names_raise_config_error_listing_the_valid_ones():
    registry: Registry[int] = Registry("test-kind", noun="widget", hint=" or a number")
    registry.register("one", 1)
    with pytest.raises(bn.ConfigError, match=r"unknown widget 'nine': expected one of \['one'\] or a number"):
        registry.get("nine")
    with pytest.raises(bn.ConfigError, match=r"unknown engine 'spark'.*'threads'.*or an Engine instance"):
        engines.get("spark")
    with pytest.raises(bn.ConfigError, match=r"unknown detector 'nope'.*'zscore'.*a Detector or a callable"):
        detectors.get("nope")
    with pytest.raises(bn.ConfigError, match=r"unknown format 'xls'.*'parquet'"):
        sources.get("xls")
    with pytest.raises(bn.ConfigError, match=r"unknown output format 'xls'.*'parquet'"):
        sinks.get("xls")


def test_the_four_registries_list_their_built_ins():
    assert engines.names()[:5] == ["sequential", "threads", "processes", "dask", "ray"]
    assert {"zscore", "mad", "iqr", "isolation_forest"} <= set(detectors.names())
    assert {"csv", "parquet", "json", "pickle", "hdf5", "feather"} <= set(sources.names())
    assert {"parquet", "csv", "json", "feather", "hdf5", "pickle"} <= set(sinks.names())


def test_a_registered_detector_is_used_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(detectors, "REGISTRY", _fresh(detectors.REGISTRY))
    detectors.register(detectors.ZScore(name="strict", description="z-score, flags score > 2", default_threshold=2.0))
    assert bn.list_detectors()["strict"] == "z-score, flags score > 2"
    source = tmp_path / "in.parquet"
    make_frame(2_000).write_parquet(source)
    strict = bn.BatchJob(source, tmp_path / "strict", detector="strict", chunk_size=1000).run(progress=None)
    usual = bn.BatchJob(source, tmp_path / "usual", detector="zscore", chunk_size=1000).run(progress=None)
    flagged = [r.read().collect()["is_anomaly"].sum() for r in (strict, usual)]
    assert flagged[0] > flagged[1]
    with pytest.raises(bn.ConfigError, match="is not a Detector"):
        detectors.register(object())


def test_a_plugin_is_found_on_first_lookup(plugin, tmp_path):
    assert "plugin-engine" in engines.names()
    assert "plugin_mod" not in sys.modules  # listed from the entry point, imported only when asked for
    assert bn.list_detectors()["plugin-zscore"] == "z-score, from a plugin"
    source = tmp_path / "in.parquet"
    make_frame(2_000).write_parquet(source)
    job = bn.BatchJob(source, tmp_path / "out", detector="plugin-zscore", engine="plugin-engine", chunk_size=1000)
    result = job.run(progress=None)
    assert result.status == "succeeded" and result.read().collect().height == 2_000


def test_a_plugin_that_cannot_load_is_named_in_a_config_error(plugin):
    with pytest.raises(bn.ConfigError, match=r"output format 'broken' \(plugin_mod:NoSuchSink\) could not be loaded"):
        sinks.get("broken")
    assert sinks.get("parquet").extension == ".parquet"  # the built-ins are untouched


def test_import_batchnb_does_not_read_or_import_plugins(plugin):
    code = "import batchnb, sys; print('plugin_mod' in sys.modules, batchnb.engines.REGISTRY._plugins_read)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), *sys.path])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "False"]
    code = "import batchnb, sys; batchnb.engines.get('plugin-engine'); print('plugin_mod' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["True"]


# --- the Engine base and the adapter for duck-typed engines ------------------------------------------------
class DuckEngine:
    """Only the core: no subclass of Engine, no capability beyond open/submit/cancel/close."""

    name, needs_pickle = "duck", False

    def __init__(self):
        self.submitted = 0

    def open(self, workers):
        pass

    def submit(self, fn, arg):  # no `affinity` keyword
        self.submitted += 1
        future: Future = Future()
        future.set_result(fn(arg))
        return future

    def cancel(self, future):
        future.cancel()

    def close(self):
        pass


def test_built_in_engines_subclass_the_base_with_declared_defaults():
    for name in ("sequential", "threads", "processes", "dask", "ray"):
        assert issubclass(engines.get(name), Engine), name
    sequential = engines.create("sequential")
    assert (sequential.max_workers, sequential.in_flight_per_worker) == (1, 1)
    assert engines.create("threads").in_flight_per_worker == 2 and engines.create("processes").can_kill
    threads = engines.create("threads")
    assert (threads.affinity_lanes(), threads.capacity(), threads.check(), threads.remote_resources()) == (
        1, None, None, None,
    )  # fmt: skip
    assert bn.Resources(max_workers=4).workers(sequential) == 1
    assert bn.Resources(max_workers=4).workers(threads) == 4


def test_a_duck_typed_engine_gets_the_defaults_through_one_adapter(tmp_path):
    duck = DuckEngine()
    adapted = as_engine(duck)
    assert isinstance(adapted, Adapter) and adapted.name == "duck" and not adapted.can_kill
    assert (adapted.affinity_lanes(), adapted.capacity(), adapted.remote_resources(), adapted.worker_pids()) == (
        1, None, None, [],
    )  # fmt: skip
    assert as_engine(engines.create("threads")).__class__.__name__ == "ThreadsEngine"  # a subclass is not wrapped
    source = tmp_path / "in.parquet"
    make_frame(3_000).write_parquet(source)
    result = bn.BatchJob(source, tmp_path / "out", engine=duck, chunk_size=1000).run(progress=None)
    assert result.status == "succeeded" and duck.submitted == 3
    assert result.read().collect().height == 3_000


def test_a_duck_typed_engine_keeps_its_own_capabilities():
    class Cluster(DuckEngine):
        can_kill = True

        def capacity(self):
            return 7

        def check(self):
            raise bn.EngineError("the cluster is gone")

        def worker_pids(self):
            return [42]

    adapted = as_engine(Cluster())
    assert adapted.can_kill and adapted.capacity() == 7 and adapted.worker_pids() == [42]
    with pytest.raises(bn.EngineError, match="gone"):
        adapted.check()


def test_a_subclass_engine_with_its_own_name_runs(tmp_path):
    class Mine(Engine):
        name = "mine"

        def open(self, workers):
            self.workers = workers

        def submit(self, fn, arg, *, affinity=None):
            future: Future = Future()
            future.set_result(fn(arg))
            return future

        def close(self):
            pass

    engine = Mine()
    source = tmp_path / "in.parquet"
    make_frame(2_000).write_parquet(source)
    result = bn.BatchJob(source, tmp_path / "out", engine=engine, chunk_size=1000).run(progress=None)
    assert result.status == "succeeded"
    assert result.read().collect().select(pl.len()).item() == 2_000
