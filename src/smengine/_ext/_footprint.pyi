import numpy as np
import numpy.typing as npt

def footprint_average(
    raster: npt.NDArray[np.float32],
    rows: npt.NDArray[np.intp],
    cols: npt.NDArray[np.intp],
    order: npt.NDArray[np.intp],
    kernel: npt.NDArray[np.float64],
    kj0: npt.NDArray[np.intp],
    kj1: npt.NDArray[np.intp],
    total_weight: float,
    min_valid_fraction: float,
    out: npt.NDArray[np.float64],
    valid_fraction: npt.NDArray[np.float64],
    n_threads: int,
) -> None: ...
