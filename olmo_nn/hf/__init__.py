"""Hugging Face interop: our checkpoints <-> transformers' OlmoForCausalLM / Olmo2ForCausalLM."""

from olmo_nn.hf.config import ARCHITECTURES, hf_config_from_transformer, transformer_config_from_hf
from olmo_nn.hf.convert import export_hf, import_hf
from olmo_nn.hf.weights import from_hf_state_dict, tensor_mapping, to_hf_state_dict

__all__ = [
    "ARCHITECTURES",
    "export_hf",
    "from_hf_state_dict",
    "hf_config_from_transformer",
    "import_hf",
    "tensor_mapping",
    "to_hf_state_dict",
    "transformer_config_from_hf",
]
