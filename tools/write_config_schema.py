"""Write docs/compress-config.schema.json, the JSON schema of `edgekd compress --config` files,
from CompressConfig (tests/cli/test_compress_config.py checks that the file is current)."""
from __future__ import annotations

import json
from pathlib import Path

from edgekd.pipeline.config import config_schema

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "compress-config.schema.json"


def schema_text() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
    print(SCHEMA_FILE)
