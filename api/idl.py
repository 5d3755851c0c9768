"""The Thrift IDL, loaded once by thriftpy2 (no generated code to keep in sync)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import thriftpy2

IDL_PATH = Path(__file__).resolve().parents[1] / "thrift" / "pulsegate.thrift"

pulsegate: Any = thriftpy2.load(str(IDL_PATH), module_name="pulsegate_thrift")
Service: Any = pulsegate.PulsegateScheduler
