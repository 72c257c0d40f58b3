"""Weight formats: the format registry (`formats`: one class per format, next to its codec in
`floats`, `i2s`, `tq`, `rust_port`, `tl`), flavor detection (`flavor`), the strict loader and
`PackedWeight` (`weights`), the synthesiser's encodings (`encoders`). Kernels are in
`bitnet.kernels`."""
