"""Kernel execution: which kernel runs a matmul, and the log of what ran.

- `dispatch`: `matmul(x, w, profile)` picks the kernel (the active backend's, else the format's
  NumPy reference kernel) and records it; `set_backend` / `get_backend`.
- `backends`: the explicit backend table (numpy, native, cuda) with `status` / `activate`.
- `runlog`: `KERNEL_LOG`, `KernelRecord` (what ran, calls, bytes, rows, time) and `timed` for
  the non-matmul ops the model records.
- `ids`: `KernelId`, the structured kernel id (weights, activations, op, backend, variant).
- `numpy_kernels`, `activations`: the NumPy reference kernels and activation quantizers.
- `native/` (cffi C) and `cuda/` (CuPy): the accelerated backends.

Formats (bytes, decoding, encoding) are not here: they are in `bitnet.quant`.
"""
