# Shared C types for smengine kernels (scikit-learn ``_typedefs.pxd`` pattern): every C type a
# kernel, a .pxd or a C header (_forest.h) uses is spelled once, here.
# Covariates are float32; accumulators are float64; indices are intp; fixed-width integers are the
# <stdint.h> types themselves, so pointers to them match the headers under GCC >= 14's
# -Werror=incompatible-pointer-types.
cimport numpy as cnp
from libc.stdint cimport int32_t as _c_int32, int64_t as _c_int64, uint8_t as _c_uint8

ctypedef cnp.npy_float32 float32_t
ctypedef cnp.npy_float64 float64_t
ctypedef cnp.npy_intp intp_t
ctypedef _c_int32 int32_t
ctypedef _c_int64 int64_t
ctypedef _c_uint8 uint8_t
