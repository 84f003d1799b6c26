"""quartet2 from PyTorch: NVFP4 linear layers (Quartet II) through libquartet2_c's C API.
quartet2.nn holds the layers (it imports torch); quartet2._capi is the ctypes binding."""
__version__ = "0.1.0"
