"""Run microsoft/BitNet's `utils/convert-hf-to-gguf-bitnet.py` on an HF checkpoint and record the
tensors it hands its GGUF writer (name, ggml type, bytes) to an .npz.

    python run_bitnet_cpp_converter.py BITNET_DIR MODEL_DIR OUT_DIR OUTTYPE[=KERNEL_CONFIG_INI] ...

writes OUT_DIR/OUTTYPE.npz (tensor bytes by name) and OUT_DIR/OUTTYPE.json (their ggml types),
one pair per OUTTYPE, in one process (torch is imported once).

Test oracle only (tests/test_convert_upstream.py); it is never imported by the harness. What it
changes around the converter, and why (nothing that computes a tensor is touched):
- gguf-py: the converter at 16da220 names `MODEL_ARCH.BITNET_B158` and
  `GGMLQuantizationType.I2_S`, which the gguf-py of the llama.cpp fork commit available here
  (3rdparty/llama.cpp at 406a5036) lacks (the commit the converter was written against,
  40ed0f29, is not public). Both are added as aliases (BITNET_B158 -> BITNET: same tensor map;
  I2_S = 36), and the GGUF writer is replaced by a recorder, so the fork writer's type table is
  never consulted. Tensor bytes come from the converter's own functions.
- the sub-norm names transformers saves (`self_attn.attn_sub_norm`, `mlp.ffn_sub_norm`) are
  added to gguf-py's tensor-name map, which knows only the 1bitLLM names.
- set_vocab is skipped (the tokenizer is not a tensor; the converter's BPE path only accepts
  tokenizers whose probe-text hash it knows), and `sentencepiece`, imported by utils/convert.py
  for vocab code that then never runs, is stubbed when not installed.
- TL1/TL2 read include/kernel_config.ini relative to the working directory, so the run happens
  in a scratch directory holding the given ini there.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import runpy
import sys
import tempfile
import types
from pathlib import Path

import numpy as np


def add_sub_norm_names(gguf) -> None:
    """gguf-py maps the sub-norms by their 1bitLLM names (`inner_attn_ln`, `ffn_layernorm`)
    only; add the names transformers' BitNetForCausalLM saves them under."""
    m = gguf.TensorNameMap.block_mappings_cfg
    for key, name in ((gguf.MODEL_TENSOR.ATTN_SUB_NORM, "model.layers.{bid}.self_attn.attn_sub_norm"),
                      (gguf.MODEL_TENSOR.FFN_SUB_NORM, "model.layers.{bid}.mlp.ffn_sub_norm")):
        if name not in m.get(key, ()):
            m[key] = (*m.get(key, ()), name)


def main() -> None:
    bitnet_dir, model_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve()
    os.environ["NO_LOCAL_GGUF"] = "1"
    sys.path[:0] = [str(bitnet_dir / "3rdparty" / "llama.cpp" / "gguf-py"), str(bitnet_dir / "utils")]
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        sys.modules["sentencepiece"] = types.SimpleNamespace(SentencePieceProcessor=None)  # type: ignore[assignment]
    import gguf

    if not hasattr(gguf.MODEL_ARCH, "BITNET_B158"):
        gguf.MODEL_ARCH.BITNET_B158 = gguf.MODEL_ARCH.BITNET
    if not hasattr(gguf.GGMLQuantizationType, "I2_S"):
        extra = enum.IntEnum("GGMLQuantizationTypeExtra", {"I2_S": 36})
        gguf.GGMLQuantizationType.I2_S = extra.I2_S

    add_sub_norm_names(gguf)
    recorded: dict[str, tuple[str, np.ndarray]] = {}

    class Recorder:
        def __init__(self, *a, **k):
            pass

        def add_tensor(self, name, tensor, raw_shape=None, raw_dtype=None):
            arr = np.ascontiguousarray(np.asarray(tensor))
            recorded[name] = (getattr(raw_dtype, "name", str(arr.dtype)), arr.reshape(-1).view(np.uint8).copy())

        def __getattr__(self, attr):
            return lambda *a, **k: None

    gguf.GGUFWriter = Recorder
    # run_path returns a copy of the module's globals; the functions see the original
    g = runpy.run_path(str(bitnet_dir / "utils" / "convert-hf-to-gguf-bitnet.py"), run_name="bitnet_cpp_converter")
    g = g["main"].__globals__
    g["BitnetModel"].set_vocab = lambda self: None
    for spec in sys.argv[4:]:
        outtype, _, ini = spec.partition("=")
        recorded.clear()
        g["args"] = argparse.Namespace(vocab_only=False, awq_path=None, outfile=out_dir / f"{outtype}.gguf",
                                       outtype=outtype, bigendian=False, model=model_dir, use_temp_file=False,
                                       model_name=None, verbose=False, quant_embd=False)
        with tempfile.TemporaryDirectory() as tmp:
            if ini:
                (Path(tmp) / "include").mkdir()
                (Path(tmp) / "include" / "kernel_config.ini").write_text(Path(ini).read_text())
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                g["main"]()
            finally:
                os.chdir(cwd)
        np.savez(out_dir / f"{outtype}.npz", **{name: data for name, (_, data) in recorded.items()})
        (out_dir / f"{outtype}.json").write_text(json.dumps({name: t for name, (t, _) in recorded.items()}))


if __name__ == "__main__":
    main()
