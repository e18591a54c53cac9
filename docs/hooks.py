"""mkdocs hooks: pages generated from the code, so the docs cannot drift."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def settings_table() -> str:
    from snakemake_executor_plugin_matensemble.settings import ExecutorSettings

    rows = ["| flag | value | meaning (and default) |", "|---|---|---|"]
    for field in dataclasses.fields(ExecutorSettings):
        flag = "--matensemble-" + field.name.replace("_", "-")
        metavar = field.metadata.get("metavar")
        value = "(a switch)" if metavar is None else f"`{metavar}`".replace("|", "\\|")
        text = " ".join(field.metadata["help"].split()).replace("|", "\\|")
        rows.append(f"| `{flag}` | {value} | {text} |")
    return "\n".join(rows)


def policies_list() -> str:
    from snakemake_executor_plugin_matensemble.packing.policies import POLICIES

    return "\n".join(f"- **`{name}`**: {cls.summary}." for name, cls in POLICIES.items())


def orders_list() -> str:
    from snakemake_executor_plugin_matensemble.packing.ordering import ORDERS

    return "\n".join(f"- **`{name}`**: {cls.summary}." for name, cls in ORDERS.items())


def on_pre_build(config, **kwargs):
    spec = importlib.util.spec_from_file_location("docs_figures", DOCS / "figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    figures.draw_policies(DOCS / "img" / "policies.png")


def on_page_markdown(markdown, page, config, files, **kwargs):
    return (
        markdown.replace("<!-- settings-table -->", settings_table())
        .replace("<!-- policies-list -->", policies_list())
        .replace("<!-- orders-list -->", orders_list())
    )
