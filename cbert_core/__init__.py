"""cbert_core: load a clinical BERT checkpoint and look inside it, without any UI.

Data flows one way: text -> :func:`trace` -> analyses -> views. Nothing in this
package imports streamlit.
"""

from .errors import CbertError
from .loading import BUNDLED, LoadedModel, ModelInfo, ModelSpec, load_model, parse_spec, resolve_default_model
from .trace import Trace, trace

__all__ = ["BUNDLED", "CbertError", "LoadedModel", "ModelInfo", "ModelSpec", "Trace", "load_model", "parse_spec",
           "resolve_default_model", "trace"]
