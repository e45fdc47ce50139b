"""``kseg.device`` (the one place kseg probes the hardware), loaded from its file: importing it as
``kseg.device`` would run ``kseg/__init__`` and with it Keras and a backend, which the benchmark's
driver process keeps out (each backend is timed in a process of its own)."""

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "kseg" / "device.py"
_spec = importlib.util.spec_from_file_location("kseg_device_standalone", _PATH)
device = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = device
_spec.loader.exec_module(device)
