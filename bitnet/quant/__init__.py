"""Weight formats: encoders (ternary -> packed bytes), decoders, and kernels."""
