"""The Thrift IDL, loaded once by thriftpy2 (no generated code to keep in sync)."""

from __future__ import annotations

from typing import Any

import thriftpy2

from api.bundled import idl_path

IDL_PATH = idl_path()

pulsegate: Any = thriftpy2.load(str(IDL_PATH), module_name="pulsegate_thrift")
Service: Any = pulsegate.PulsegateScheduler
