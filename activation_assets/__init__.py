"""activation-assets: a user activation layer (new / retained / reactivated / inactive) as Dagster assets.

    activation_assets.build_defs(config)  the Definitions of an ActivationConfig (load_config / parse_config)
    activation_assets.ActivationLayer     the same as a Dagster Component (defs.yaml)

Both are imported on first use, so importing the package (as the CLI does) stays cheap.
"""

__all__ = ["ActivationLayer", "build_defs", "load_config", "parse_config"]


def __getattr__(name: str):
    if name == "ActivationLayer":
        from activation_assets.orchestration.component import ActivationLayer

        return ActivationLayer
    if name == "build_defs":
        from activation_assets.orchestration.definitions import build_defs

        return build_defs
    if name in ("load_config", "parse_config"):
        from activation_assets import config

        return getattr(config, name)
    raise AttributeError(name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
