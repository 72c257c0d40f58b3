"""`bitnet convert HF_DIR OUT.gguf --type TYPE`: an HF BitNet checkpoint to GGUF."""

from __future__ import annotations

import argparse
import time

from bitnet.cli.args import output_file
from bitnet.progress import add_quiet_arg, progress


def register(sub: argparse._SubParsersAction) -> None:
    from bitnet.convert.convert import ARCHS, TYPES
    from bitnet.convert.ternarize import ABSMEAN_METHODS

    p = sub.add_parser("convert", help="convert an HF BitNetForCausalLM checkpoint (safetensors) to GGUF",
                       description="Convert an HF BitNetForCausalLM checkpoint directory (config.json, "
                       "*.safetensors, tokenizer.json) to GGUF, tensor for tensor as bitnet.cpp's converter "
                       "(i2_s, tl1, tl2) or llama.cpp's (tq1_0, tq2_0, f16) writes it. Streams one tensor at "
                       "a time; the output is written atomically.")
    p.add_argument("model_dir", metavar="HF_DIR", help="checkpoint directory")
    p.add_argument("out", type=output_file, metavar="OUT.gguf", help="output path (written atomically)")
    p.add_argument("--type", dest="typ", required=True, choices=list(TYPES),
                   help="weight type of the seven projections")
    p.add_argument("--arch", choices=ARCHS,
                   help="GGUF arch (default: the one whose FFN matches hidden_act: relu2 -> bitnet-b1.58, "
                   "silu -> bitnet); i2_s/tl1/tl2 are bitnet-b1.58 only")
    p.add_argument("--absmean", choices=ABSMEAN_METHODS, default="auto",
                   help="how the float32 mean |W| of master weights is summed: torch (as the converters "
                   "and the model do; thread-count dependent), exact (float64, no torch), auto = torch "
                   "when installed")
    p.add_argument("--kernel-config", metavar="INI",
                   help="tl1/tl2: bitnet.cpp include/kernel_config.ini (or a checkout) to tile by "
                   "(default: the harness's tiles, recorded in the file either way)")
    p.add_argument("--tokenizer-pre", metavar="NAME",
                   help="llama.cpp pre-tokenizer type when tokenizer.json's is not LLaMA 3 / GPT-2")
    p.add_argument("--name", help="general.name (default: the directory name)")
    add_quiet_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, io) -> int:
    from bitnet.convert import convert
    from bitnet.files.atomic import check_writable

    check_writable(args.out, "output")
    t0 = time.perf_counter()
    with progress(f"converting {args.model_dir} -> {args.out} ({args.typ})", total=1, stream=io.stderr,
                  quiet=args.quiet) as update:
        r = convert(args.model_dir, args.out, args.typ, arch=args.arch, absmean=args.absmean,
                    kernel_config=args.kernel_config, tokenizer_pre=args.tokenizer_pre, name=args.name,
                    on_progress=lambda done, total: update(completed=done, total=total))
    for note in r.notes:
        print(f"bitnet convert: note: {note}", file=io.stderr)
    print(f"wrote {r.path} ({r.nbytes:,} bytes, {r.n_tensors} tensors, arch {r.arch}, {r.type}, "
          f"{r.weights} weights, absmean {r.absmean}) in {time.perf_counter() - t0:.2f} s", file=io.stdout)
    return 0
