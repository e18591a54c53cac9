#!/usr/bin/env bash
# Build the documentation site into site/ (strict: broken links fail the build).
set -euo pipefail
cd "$(dirname "$0")/.."
uv run --group docs mkdocs build --strict --site-dir site "$@"
