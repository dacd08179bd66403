"""rag: question answering over your own documents with cited answers.

Importing the package switches off the telemetry that unstructured, Gradio, Hugging Face and ONNX Runtime
send by default: the product makes no network call a user did not configure.
"""

import os
import sys

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# ONNX Runtime (imported by unstructured's PDF path) starts a 1DS telemetry client when its library
# loads and resolves mobile.events.data.microsoft.com about 10 s later, whatever DO_NOT_TRACK says.
# The library reads this variable at load time; `onnxruntime.disable_telemetry_events()` called after
# the import is too late (checked with strace: 6 lookups in 25 s with it, none with the variable).
# The variable needs no import, so `rag stats` stays fast.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
if "onnxruntime" in sys.modules:  # imported before us: stop what can still be stopped
    try:
        sys.modules["onnxruntime"].disable_telemetry_events()
    except Exception:  # an onnxruntime without the switch has no 1DS client either
        pass

from rag.secrets import install_log_redaction  # noqa: E402  (after the environment is set)

# Every log line of the process goes through the one redaction function (issue 14 #9).
install_log_redaction()

__version__ = "0.1.0"
