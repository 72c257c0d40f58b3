"""Run llama.cpp's `convert_hf_to_gguf.py` on an HF checkpoint, writing its GGUF.

    python run_llama_cpp_converter.py LLAMA_CPP_DIR MODEL_DIR OUT_DIR OUTTYPE ...

writes OUT_DIR/OUTTYPE.gguf for each OUTTYPE, in one process (torch is imported once).

Test oracle only (tests/test_convert_upstream.py). What it changes around the converter, and
why (nothing that computes a tensor is touched):
- set_vocab is skipped: llama.cpp's BitnetModel reads only a SentencePiece tokenizer.model, and
  the comparison is of tensors.
- the sub-norm names transformers saves (`self_attn.attn_sub_norm`, `mlp.ffn_sub_norm`) are
  added to gguf-py's tensor-name map, which knows only the 1bitLLM names (`inner_attn_ln`,
  `ffn_layernorm`): without them the converter stops at "Can not map tensor".
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path


def main() -> None:
    src, model_dir, out_dir, outtypes = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
    os.environ["NO_LOCAL_GGUF"] = "1"
    sys.path[:0] = [str(src / "gguf-py"), str(src)]
    import gguf

    sys.path.insert(0, str(Path(__file__).parent))
    from run_bitnet_cpp_converter import add_sub_norm_names

    add_sub_norm_names(gguf)
    import conversion.bitnet

    conversion.bitnet.BitnetModel.set_vocab = lambda self: None
    for outtype in outtypes:
        sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outtype", outtype, "--outfile",
                    str(out_dir / f"{outtype}.gguf")]
        runpy.run_path(str(src / "convert_hf_to_gguf.py"), run_name="__main__")


if __name__ == "__main__":
    main()
