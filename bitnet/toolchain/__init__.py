"""The C toolchain: the one cffi shim builder (`ffi`, AC6) and the llama-cpp-python sdist that
supplies llama.cpp's source and vocab test data (`sdist`)."""
