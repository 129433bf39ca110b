"""Facts from dbt: the config's dbt project as Dagster assets, and `source: {dbt_model: NAME}`
resolved to the model's asset key and relation through the dbt manifest.

The manifest (`target/manifest.json`) is prepared at install time (`make install` runs `dbt parse`)
and again, once, whenever a file of the dbt project is newer than it, so loading the code location
reads a file instead of running dbt.
"""


import contextlib
import hashlib
import functools
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from activation_assets import tables as relations
from activation_assets.config import ActivationConfig, ConfigError, DbtConfig

log = logging.getLogger("activation_assets.dbt")

DBT_RESOURCE = "dbt"
# What the bundled dbt project's profile and sources read; set whenever this package runs dbt.
DATABASE_ENV_VAR = "ACTIVATION_DUCKDB_PATH"
CONFIG_DIR_ENV_VAR = "ACTIVATION_CONFIG_DIR"
_SKIPPED_DIRS = {"target", "logs", "dbt_packages", ".venv", "__pycache__"}


class DbtError(Exception):
    """A dbt project or model that cannot be used, in the user's terms."""


def manifest_path(dbt: DbtConfig) -> Path:
    return Path(dbt.project_dir) / "target" / "manifest.json"


def _newest_source_file(project_dir: Path) -> float:
    newest = 0.0
    for root, dirs, files in os.walk(project_dir):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]
        for name in files:
            if name.endswith((".sql", ".yml", ".yaml", ".csv", ".py", ".md")):
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    return newest


def ensure_manifest(dbt: DbtConfig) -> Path:
    """The manifest, parsed again only when a file of the project is newer than it (or it is missing)."""
    project_dir = Path(dbt.project_dir)
    if not (project_dir / "dbt_project.yml").exists():
        raise DbtError(f"{project_dir} is not a dbt project (no dbt_project.yml); fix `dbt: project_dir:`")
    path = manifest_path(dbt)
    if path.exists() and path.stat().st_mtime >= _newest_source_file(project_dir):
        return path
    began = time.monotonic()
    log.info("preparing the dbt manifest of %s (dbt parse)", project_dir)
    from dagster_dbt import DbtCliResource

    invocation = DbtCliResource(**_resource_args(dbt)).cli(["parse"], target_path=Path("target"), raise_on_error=False)
    invocation.wait()
    if not invocation.is_successful() or not path.exists():
        messages = [e.get("info", {}).get("msg", "") for e in invocation.get_error_events()] if hasattr(
            invocation, "get_error_events") else []
        detail = "; ".join(m for m in messages if m) or "see the dbt log in target/"
        raise DbtError(f"`dbt parse` failed in {project_dir}: {detail}")
    log.info("dbt manifest ready in %.1f s", time.monotonic() - began)
    return path


def load_manifest(dbt: DbtConfig) -> dict[str, Any]:
    """The parsed manifest; read once per version of the file (every dbt_model source and the
    dbt assets of one code location share it)."""
    path = ensure_manifest(dbt)
    return _read_manifest(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_manifest(path: str, mtime_ns: int) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _resource_args(dbt: DbtConfig) -> dict[str, Any]:
    args: dict[str, Any] = {"project_dir": dbt.project_dir, "profiles_dir": dbt.profiles_dir or dbt.project_dir}
    if dbt.target:
        args["target"] = dbt.target
    # dbt-core installed next to this Python (a virtualenv not on PATH, as `make` sets up)
    beside = Path(sys.executable).parent / "dbt"
    if beside.exists() and not shutil.which("dbt"):
        args["dbt_executable"] = str(beside)
    return args


def _models(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {node["name"]: node for node in manifest["nodes"].values() if node.get("resource_type") == "model"}


def translator() -> "DagsterDbtTranslator":  # noqa: F821 (imported lazily)
    from dagster_dbt import DagsterDbtTranslator

    class Translator(DagsterDbtTranslator):
        """dbt models in one group, `dbt`; sources (the raw files) in `raw`."""

        def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
            return "raw" if dbt_resource_props.get("resource_type") == "source" else "dbt"

    return Translator()


def resolve_model(dbt: DbtConfig, name: str) -> tuple[tuple[str, ...], str]:
    """The asset key and the relation (schema.alias) of a dbt model."""
    manifest = load_manifest(dbt)
    models = _models(manifest)
    node = models.get(name)
    if node is None:
        known = ", ".join(sorted(models)) or "none"
        raise DbtError(f"no dbt model named {name!r} in {dbt.project_dir} (its models: {known})")
    key = translator().get_asset_spec(manifest, node["unique_id"], None).key
    relation = f"{node['schema']}.{node.get('alias') or node['name']}"
    return tuple(key.path), relation


def with_dbt_models(config: ActivationConfig) -> ActivationConfig:
    """The config with each `dbt_model:` source's asset key and relation filled in from the dbt
    project's manifest (prepared first if a file of the project is newer than it)."""
    wanted = [(i, b) for i, b in enumerate(config.behaviors) if b.source.dbt_model and not b.source.asset]
    if not wanted:
        return config
    behaviors = list(config.behaviors)
    for i, behavior in wanted:
        try:
            with dbt_environment(config):  # a parse renders the profile as the builds do: partial parsing holds
                key, relation = resolve_model(config.dbt, behavior.source.dbt_model)
        except DbtError as exc:
            raise ConfigError(f"{config.path}: behaviors[{i}] ({behavior.name}) source.dbt_model: {exc}") from None
        source = behavior.source.model_copy(update={"asset": key, "table": behavior.source.table or relation})
        behaviors[i] = behavior.model_copy(update={"source": source})
    return config.model_copy(update={"behaviors": tuple(behaviors)})


@contextlib.contextmanager
def dbt_environment(config: ActivationConfig) -> Iterator[None]:
    """The variables a dbt profile can read to write into this layer's warehouse."""
    values = {CONFIG_DIR_ENV_VAR: str(config.base_dir)}
    if config.database and config.database != ":memory:":
        values[DATABASE_ENV_VAR] = config.database
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- the layer as dbt sources, for models downstream of it ---------------------------------------------

LAYER_SOURCE = "activation"  # the dbt source whose tables are the layer's relations
DBT_UPSTREAM, DBT_DOWNSTREAM = "dbt_models", "dbt_downstream"  # the two dbt multi-assets (op names)


def layer_sources_yaml(config: ActivationConfig) -> str:
    """A dbt sources file naming every relation of the config's behaviors as a table of the source
    `activation`, each mapped to its Dagster asset key (`meta.dagster.asset_key`), so that a dbt
    project downstream reads them with `source()` and Dagster draws the lineage into its models."""
    import yaml

    def relation(behavior, rel, grain=None) -> dict:
        name = rel.table(behavior.name, grain)
        return {"name": name, "description": " ".join(rel.description.split()),
                "meta": {"dagster": {"asset_key": [name]}}}

    entries = []
    for behavior in config.behaviors:
        entries.append(relation(behavior, relations.FACT))
        for grain in behavior.grains:
            entries += [relation(behavior, rel, grain)
                        for rel in relations.per_grain(grain, segmented=bool(behavior.segments))]
    document = {"version": 2, "sources": [{
        "name": LAYER_SOURCE, "schema": "main",
        "description": f"The activation layer of {config.path.name} (activation-assets), in its warehouse.",
        "tables": entries}]}
    header = (f"# Generated by `activation dbt-sources --config {config.path.name}`: the activation layer's\n"
              "# relations as dbt sources, each mapped to its Dagster asset. Do not edit; generate it again.\n")
    return header + yaml.safe_dump(document, sort_keys=False, width=110)


# --- a build with nothing new to read is skipped -----------------------------------------------------

_ENV_VAR = re.compile(r"\{\{\s*env_var\(\s*'(\w+)'\s*(?:,\s*'([^']*)')?\s*\)\s*\}\}")
_QUOTED = re.compile(r"'([^']+)'")


def _environment(config: ActivationConfig) -> dict[str, str]:
    with dbt_environment(config):
        return {name: os.environ[name] for name in (CONFIG_DIR_ENV_VAR, DATABASE_ENV_VAR) if name in os.environ}


def _source_files(config: ActivationConfig, manifest: Mapping[str, Any]) -> list[Path] | None:
    """The files the project's sources read, from their `external_location`s (their quoted paths, with
    `env_var()` as `dbt_environment` sets it, relative to the project); None when a source has none
    (a relation in the warehouse, which this cannot see change)."""
    env, project = {**os.environ, **_environment(config)}, Path(config.dbt.project_dir)
    files: list[Path] = []
    for node in manifest.get("sources", {}).values():
        if node.get("source_name") == LAYER_SOURCE:
            continue  # the layer's relations: downstream builds follow its partition log instead
        location = (node.get("meta") or {}).get("external_location")
        if not location:
            return None
        rendered = _ENV_VAR.sub(lambda m: env.get(m[1], m[2] or ""), location)
        for quoted in _QUOTED.findall(rendered):
            pattern = Path(quoted) if Path(quoted).is_absolute() else project / quoted
            anchor = Path(pattern.anchor)
            files += sorted(anchor.glob(str(pattern.relative_to(anchor)))) if "*" in quoted else [pattern]
    return files


def build_inputs(config: ActivationConfig) -> str | None:
    """A fingerprint of what `dbt build` reads: the project's files, the profile, the variables this
    package sets, and the source files (size and modification time); None when it cannot be known."""
    dbt = config.dbt
    project = Path(dbt.project_dir)
    with dbt_environment(config):
        sources = _source_files(config, load_manifest(dbt))
    if sources is None:
        return None
    seen = []
    for root, dirs, names in os.walk(project):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        seen += [Path(root) / name for name in sorted(names)]
    profiles = Path(dbt.profiles_dir or dbt.project_dir) / "profiles.yml"
    parts = [json.dumps([_environment(config), dbt.target])]
    for path in [*seen, profiles, *sources]:
        stat = path.stat() if path.exists() else None
        parts.append(f"{path} {stat.st_size if stat else '-'} {stat.st_mtime_ns if stat else '-'}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def last_build_path(dbt: DbtConfig, downstream: bool = False) -> Path:
    return Path(dbt.project_dir) / "target" / ("activation_last_build" + ("_downstream" if downstream else ""))


def downstream_ids(manifest: Mapping[str, Any]) -> set[str]:
    """The nodes that read the layer (its `activation` source), directly or not."""
    found: set[str] = set()
    todo = [uid for uid, node in manifest.get("sources", {}).items() if node.get("source_name") == LAYER_SOURCE]
    while todo:
        for child in manifest.get("child_map", {}).get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def models_in_warehouse(config: ActivationConfig, warehouse, downstream: bool) -> bool:
    manifest = load_manifest(config.dbt)
    below = downstream_ids(manifest)
    return all(warehouse.table_exists(node.get("alias") or node["name"])
               for uid, node in manifest["nodes"].items()
               if node.get("resource_type") == "model" and (uid in below) == downstream)


def dbt_definitions(config: ActivationConfig) -> tuple[list, dict]:
    """The dbt project's models as one multi-asset (running `dbt build`: models and their tests),
    and the `dbt` resource."""
    import dagster as dg
    from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

    dbt = config.dbt
    assert dbt is not None
    with dbt_environment(config):  # a parse renders the profile as the builds do: partial parsing holds
        manifest = ensure_manifest(dbt)
    project = DbtProject(project_dir=dbt.project_dir, profiles_dir=dbt.profiles_dir or dbt.project_dir,
                         target=dbt.target)

    def models(name: str, **selection):
        @dbt_assets(manifest=manifest, project=project, name=name, pool=config.engine,
                    dagster_dbt_translator=translator(), **selection)
        def _models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
            with dbt_environment(config):
                yield from dbt.cli(["build"], context=context).stream()

        return _models

    # The models the layer reads (built before it), and those that read the layer (after it): their
    # `activation` source tables are the layer's assets (meta.dagster.asset_key), so the lineage runs
    # from the raw files through the layer into them.
    manifest_data = load_manifest(dbt)
    below = f"source:{LAYER_SOURCE}+"
    assets = [models(DBT_UPSTREAM, exclude=below)]
    if any(manifest_data["nodes"].get(uid, {}).get("resource_type") == "model" for uid in downstream_ids(manifest_data)):
        assets.append(models(DBT_DOWNSTREAM, select=below))
    # The dbt sources (the raw files), so that the lineage starts at them, in their own group.
    sources = [
        dg.AssetSpec(translator().get_asset_spec(manifest_data, unique_id, project).key,
                     description=node.get("description") or None, group_name="raw", kinds={"dbt", "source"},
                     metadata={"dbt_source": f"{node['source_name']}.{node['name']}",
                               "external_location": (node.get("meta") or {}).get("external_location", "")})
        for unique_id, node in manifest_data.get("sources", {}).items() if node.get("source_name") != LAYER_SOURCE]
    return [*sources, *assets], {DBT_RESOURCE: DbtCliResource(**_resource_args(dbt))}
