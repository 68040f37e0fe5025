# Shared C types for smengine kernels (scikit-learn ``_typedefs.pxd`` pattern).
# Covariates are float32; accumulators are float64; indices are intp.
cimport numpy as cnp

ctypedef cnp.npy_float32 float32_t
ctypedef cnp.npy_float64 float64_t
ctypedef cnp.npy_intp intp_t
ctypedef cnp.npy_int32 int32_t
ctypedef cnp.npy_uint8 uint8_t
